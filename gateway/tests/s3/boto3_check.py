"""Drives `crowd gateway`'s S3 API with boto3 (AWS's own SDK), covering
every operation the gateway serves and its error codes. Run by
gateway/tests/gateway.rs:

    python boto3_check.py ENDPOINT ACCESS_KEY SECRET_KEY

Prints one JSON line {"ok": true, "checks": N, "objects": {...}} on success;
raises (exit 1, with a traceback) on the first check that fails.
"""
import base64
import hashlib
import json
import os
import sys

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, access, secret = sys.argv[1:4]
checks = 0


def s3_client(key=access, secret_key=secret, signed=True):
    config = Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 1},
        read_timeout=300,
        signature_version="s3v4" if signed else UNSIGNED,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=config,
    )


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


def error_of(fn, *args, **kwargs):
    """The S3 error code and HTTP status a call fails with."""
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError(f"{fn.__name__} did not fail")


def expect_error(code, status, fn, *args, **kwargs):
    got = error_of(fn, *args, **kwargs)
    check(got == (code, status), f"{fn.__name__}: expected {code}/{status}, got {got}")


def md5(data):
    return hashlib.md5(data).hexdigest()


s3 = s3_client()

# buckets
check("Buckets" in s3.list_buckets(), "ListBuckets answers")
s3.create_bucket(Bucket="photos")
s3.create_bucket(Bucket="empty-one")
expect_error("BucketAlreadyOwnedByYou", 409, s3.create_bucket, Bucket="photos")
names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
check(names == ["empty-one", "photos"], f"ListBuckets lists both: {names}")
s3.head_bucket(Bucket="photos")
expect_error("404", 404, s3.head_bucket, Bucket="nope")

# objects: metadata, content type, ETag, Content-MD5
body = os.urandom(300_000)
put = s3.put_object(
    Bucket="photos",
    Key="2026/cat.jpg",
    Body=body,
    ContentType="image/jpeg",
    Metadata={"camera": "pinhole", "place": "home"},
    ContentMD5=base64.b64encode(hashlib.md5(body).digest()).decode(),
)
check(put["ETag"] == f'"{md5(body)}"', f"PutObject's ETag is the MD5: {put['ETag']}")
expect_error(
    "BadDigest",
    400,
    s3.put_object,
    Bucket="photos",
    Key="bad-md5",
    Body=b"abc",
    ContentMD5=base64.b64encode(hashlib.md5(b"abd").digest()).decode(),
)
expect_error("NoSuchKey", 404, s3.get_object, Bucket="photos", Key="bad-md5")
head = s3.head_object(Bucket="photos", Key="2026/cat.jpg")
check(head["ContentLength"] == len(body), "HeadObject's length")
check(head["ContentType"] == "image/jpeg", f"Content-Type round-trips: {head['ContentType']}")
check(head["Metadata"] == {"camera": "pinhole", "place": "home"}, f"metadata round-trips: {head['Metadata']}")
check(head["ETag"] == f'"{md5(body)}"', "HeadObject's ETag")
got = s3.get_object(Bucket="photos", Key="2026/cat.jpg")
check(got["Body"].read() == body, "GetObject returns the bytes")
check(got["Metadata"]["camera"] == "pinhole", "GetObject's metadata")
for rng, lo, hi in [("bytes=0-0", 0, 1), ("bytes=1000-199999", 1000, 200000), ("bytes=-10", len(body) - 10, len(body)), ("bytes=299990-", 299990, len(body))]:
    part = s3.get_object(Bucket="photos", Key="2026/cat.jpg", Range=rng)
    check(part["Body"].read() == body[lo:hi], f"Range {rng}")
    check(part["ContentRange"] == f"bytes {lo}-{hi - 1}/{len(body)}", f"Content-Range of {rng}: {part['ContentRange']}")
    check(part["ResponseMetadata"]["HTTPStatusCode"] == 206, f"206 for {rng}")
expect_error("InvalidRange", 416, s3.get_object, Bucket="photos", Key="2026/cat.jpg", Range="bytes=400000-")
expect_error("NoSuchKey", 404, s3.get_object, Bucket="photos", Key="2026/dog.jpg")
expect_error("NoSuchBucket", 404, s3.get_object, Bucket="nope", Key="x")
expect_error("NoSuchBucket", 404, s3.put_object, Bucket="nope", Key="x", Body=b"x")
expect_error("304", 304, s3.get_object, Bucket="photos", Key="2026/cat.jpg", IfNoneMatch=f'"{md5(body)}"')

# empty and overwritten objects
s3.put_object(Bucket="photos", Key="empty", Body=b"")
check(s3.get_object(Bucket="photos", Key="empty")["Body"].read() == b"", "an empty object")
check(s3.head_object(Bucket="photos", Key="empty")["ETag"] == f'"{md5(b"")}"', "an empty object's ETag")
s3.put_object(Bucket="photos", Key="note.txt", Body=b"first")
s3.put_object(Bucket="photos", Key="note.txt", Body=b"second", ContentType="text/plain")
check(s3.get_object(Bucket="photos", Key="note.txt")["Body"].read() == b"second", "an overwrite wins")

# listings: prefix, delimiter, max-keys, continuation tokens
keys = ["a/1", "a/2", "a/b/3", "b", "c/x", "c/y", "d"]
for k in keys:
    s3.put_object(Bucket="photos", Key=f"list/{k}", Body=k.encode())
everything, prefixes, token, pages = [], [], None, 0
while True:
    kwargs = {"Bucket": "photos", "Prefix": "list/", "Delimiter": "/", "MaxKeys": 2}
    if token:
        kwargs["ContinuationToken"] = token
    page = s3.list_objects_v2(**kwargs)
    pages += 1
    check(page["KeyCount"] <= 2, "MaxKeys is kept")
    everything += [o["Key"] for o in page.get("Contents", [])]
    prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    if not page["IsTruncated"]:
        break
    token = page["NextContinuationToken"]
check(everything == ["list/b", "list/d"], f"keys by delimiter: {everything}")
check(prefixes == ["list/a/", "list/c/"], f"common prefixes: {prefixes}")
check(pages == 2, f"two pages of two: {pages}")
flat = s3.list_objects_v2(Bucket="photos", Prefix="list/a/")
check([o["Key"] for o in flat["Contents"]] == ["list/a/1", "list/a/2", "list/a/b/3"], "a prefix without delimiter")
check(all(o["ETag"].startswith('"') and o["Size"] > 0 for o in flat["Contents"]), "listed ETags and sizes")
paginator = s3.get_paginator("list_objects_v2")
listed = [o["Key"] for p in paginator.paginate(Bucket="photos", PaginationConfig={"PageSize": 3}) for o in p.get("Contents", [])]
check(listed == sorted(listed) and len(listed) == len(keys) + 3, f"the paginator lists every key once: {listed}")
expect_error("InvalidArgument", 400, s3.list_objects_v2, Bucket="photos", ContinuationToken="garbage")
v1 = s3.list_objects(Bucket="photos", Prefix="list/c/")
check([o["Key"] for o in v1["Contents"]] == ["list/c/x", "list/c/y"], "ListObjects (v1)")

# multipart: 5 MiB + 1 KiB in two parts
p1, p2 = os.urandom(5 << 20), os.urandom(1024)
up = s3.create_multipart_upload(Bucket="photos", Key="big/video.bin", ContentType="video/mp4", Metadata={"take": "2"})
uid = up["UploadId"]
e1 = s3.upload_part(Bucket="photos", Key="big/video.bin", UploadId=uid, PartNumber=1, Body=p1)["ETag"]
e2 = s3.upload_part(Bucket="photos", Key="big/video.bin", UploadId=uid, PartNumber=2, Body=p2)["ETag"]
check(e1 == f'"{md5(p1)}"', "a part's ETag is its MD5")
parts = s3.list_parts(Bucket="photos", Key="big/video.bin", UploadId=uid)["Parts"]
check([(p["PartNumber"], p["Size"], p["ETag"]) for p in parts] == [(1, len(p1), e1), (2, len(p2), e2)], f"ListParts: {parts}")
page = s3.list_parts(Bucket="photos", Key="big/video.bin", UploadId=uid, MaxParts=1)
check(page["IsTruncated"] and page["NextPartNumberMarker"] == 1, "ListParts pages")
uploads = s3.list_multipart_uploads(Bucket="photos").get("Uploads", [])
check([u["UploadId"] for u in uploads] == [uid], "ListMultipartUploads")
expect_error(
    "InvalidPart",
    400,
    s3.complete_multipart_upload,
    Bucket="photos",
    Key="big/video.bin",
    UploadId=uid,
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e2}, {"PartNumber": 2, "ETag": e2}]},
)
done = s3.complete_multipart_upload(
    Bucket="photos",
    Key="big/video.bin",
    UploadId=uid,
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
)
want = hashlib.md5(hashlib.md5(p1).digest() + hashlib.md5(p2).digest()).hexdigest() + "-2"
check(done["ETag"] == f'"{want}"', f"the multipart ETag is MD5-of-MD5s-N: {done['ETag']} vs {want}")
got = s3.get_object(Bucket="photos", Key="big/video.bin")
check(got["Body"].read() == p1 + p2, "the completed object is its parts")
check(got["ContentType"] == "video/mp4" and got["Metadata"] == {"take": "2"}, "multipart type and metadata")
tail = s3.get_object(Bucket="photos", Key="big/video.bin", Range=f"bytes={(5 << 20) - 5}-{(5 << 20) + 4}")
check(tail["Body"].read() == (p1 + p2)[(5 << 20) - 5:(5 << 20) + 5], "a range across the parts")
expect_error("NoSuchUpload", 404, s3.list_parts, Bucket="photos", Key="big/video.bin", UploadId=uid)
small = s3.create_multipart_upload(Bucket="photos", Key="small-parts")["UploadId"]
a = s3.upload_part(Bucket="photos", Key="small-parts", UploadId=small, PartNumber=1, Body=b"x" * 100)["ETag"]
b = s3.upload_part(Bucket="photos", Key="small-parts", UploadId=small, PartNumber=2, Body=b"y" * 100)["ETag"]
expect_error(
    "EntityTooSmall",
    400,
    s3.complete_multipart_upload,
    Bucket="photos",
    Key="small-parts",
    UploadId=small,
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": a}, {"PartNumber": 2, "ETag": b}]},
)
s3.abort_multipart_upload(Bucket="photos", Key="small-parts", UploadId=small)
expect_error("NoSuchUpload", 404, s3.list_parts, Bucket="photos", Key="small-parts", UploadId=small)
expect_error("NoSuchUpload", 404, s3.upload_part, Bucket="photos", Key="small-parts", UploadId=small, PartNumber=3, Body=b"z")

# authentication
expect_error("SignatureDoesNotMatch", 403, s3_client(secret_key="x" * 40).list_buckets)
expect_error("InvalidAccessKeyId", 403, s3_client(key="AKIANOTTHEGATEWAYS00").list_buckets)
expect_error("AccessDenied", 403, s3_client(signed=False).list_buckets)
expect_error("AccessDenied", 403, s3_client(signed=False).get_object, Bucket="photos", Key="2026/cat.jpg")

# deletes: an object, a non-empty bucket, an empty one
s3.delete_object(Bucket="photos", Key="note.txt")
expect_error("NoSuchKey", 404, s3.get_object, Bucket="photos", Key="note.txt")
s3.delete_object(Bucket="photos", Key="never-was")
gone = s3.delete_objects(Bucket="photos", Delete={"Objects": [{"Key": "list/b"}, {"Key": "list/d"}]})
check(sorted(d["Key"] for d in gone["Deleted"]) == ["list/b", "list/d"], "DeleteObjects")
expect_error("BucketNotEmpty", 409, s3.delete_bucket, Bucket="photos")
s3.delete_bucket(Bucket="empty-one")
expect_error("NoSuchBucket", 404, s3.delete_bucket, Bucket="empty-one")

print(json.dumps({
    "ok": True,
    "checks": checks,
    "kept": {"photos/2026/cat.jpg": md5(body), "photos/big/video.bin": want},
    "deleted": ["photos/note.txt", "photos/list/b", "photos/list/d"],
}))
