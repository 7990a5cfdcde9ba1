//! What an `/ipfs/{cid}` request asks for, parsed from its path, query and
//! headers (pure: no I/O), per the IPFS trustless gateway specification.

use std::ops::Range;

use crowd_chunker::Cid;

use crate::error::GatewayError;

/// The response format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// One block, `application/vnd.ipld.raw`.
    Raw,
    /// A CAR v1 stream, `application/vnd.ipld.car`.
    Car(CarOptions),
    /// The file's bytes (deserialized), for browsers and curl.
    File,
}

/// Which blocks of the DAG a CAR holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DagScope {
    /// Only the root block.
    Block,
    /// Every block needed to read the whole file (for a UnixFS file, the
    /// same as `All`).
    Entity,
    /// The whole DAG under the root.
    All,
}

/// `entity-bytes=from:to`: inclusive offsets, negative ones counted from
/// the end, `to = None` for `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityBytes {
    pub from: i64,
    pub to: Option<i64>,
}

/// What a CAR request settled on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarOptions {
    pub scope: DagScope,
    pub bytes: Option<EntityBytes>,
    /// `dups=y`: a block is sent every time the walk meets it.
    pub dups: bool,
}

/// A parsed request for `/ipfs/{cid}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpfsRequest {
    pub cid: Cid,
    pub format: Format,
}

/// Longest CID string accepted (a CIDv1 with a 64-byte digest in base32 is
/// about 120 characters).
pub const MAX_CID_LEN: usize = 256;

/// Parses the `{cid}[/{path}]` part of the path, the raw query string and
/// the `Accept` header. `format` takes precedence over `Accept`.
pub fn parse(path: &str, query: Option<&str>, accept: Option<&str>) -> Result<IpfsRequest, GatewayError> {
    let (cid_text, rest) = match path.split_once('/') {
        Some((c, rest)) => (c, rest),
        None => (path, ""),
    };
    if cid_text.is_empty() {
        return Err(GatewayError::BadRequest("no CID after /ipfs/".into()));
    }
    if cid_text.len() > MAX_CID_LEN {
        return Err(GatewayError::BadRequest(format!(
            "the CID is {} characters long (at most {MAX_CID_LEN})",
            cid_text.len()
        )));
    }
    let cid: Cid = cid_text
        .parse()
        .map_err(|e| GatewayError::BadRequest(format!("'{}' is not a CID: {e}", printable(cid_text))))?;
    if !rest.trim_matches('/').is_empty() {
        // our DAGs are single UnixFS files: there is nothing inside to walk to
        return Err(GatewayError::NotFound(format!(
            "{cid} is a file: it has no path '{}' inside",
            printable(rest)
        )));
    }
    let mut format_param = None;
    let mut scope = None;
    let mut bytes = None;
    let mut dups_param = None;
    let mut order_param = None;
    let mut version_param = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v)?;
        let slot = match k {
            "format" => &mut format_param,
            "dag-scope" => &mut scope,
            "entity-bytes" => &mut bytes,
            "car-dups" => &mut dups_param,
            "car-order" => &mut order_param,
            "car-version" => &mut version_param,
            // the path gateway's other parameters (filename, download) do
            // not change which bytes are sent
            _ => continue,
        };
        if slot.replace(v).is_some() {
            return Err(GatewayError::BadRequest(format!("'{k}' is given twice")));
        }
    }
    let accepted = accept.map(parse_accept).transpose()?.flatten();
    let format = match format_param.as_deref() {
        Some("raw") => Kind::Raw,
        Some("car") => Kind::Car,
        Some(other) => {
            return Err(GatewayError::BadRequest(format!(
                "format '{}' is not served here (raw or car)",
                printable(other)
            )))
        }
        None => match &accepted {
            Some(Accepted::Raw) => Kind::Raw,
            Some(Accepted::Car { .. }) => Kind::Car,
            None => Kind::File,
        },
    };
    if format != Kind::Car && (scope.is_some() || bytes.is_some()) {
        return Err(GatewayError::BadRequest(
            "dag-scope and entity-bytes are only for CAR requests (format=car)".into(),
        ));
    }
    let format = match format {
        Kind::Raw => Format::Raw,
        Kind::File => Format::File,
        Kind::Car => {
            let (mut dups, mut order, mut version) = match accepted {
                Some(Accepted::Car { dups, order, version }) => (dups, order, version),
                _ => (None, None, None),
            };
            dups = dups_param.or(dups);
            order = order_param.or(order);
            version = version_param.or(version);
            if let Some(v) = version.as_deref() {
                if v != "1" {
                    return Err(GatewayError::BadRequest(format!(
                        "CAR version {} is not served here (only 1)",
                        printable(v)
                    )));
                }
            }
            if let Some(o) = order.as_deref() {
                if o != "dfs" && o != "unk" {
                    return Err(GatewayError::BadRequest(format!(
                        "CAR order '{}' is not served here (dfs)",
                        printable(o)
                    )));
                }
            }
            let dups = match dups.as_deref() {
                None | Some("n") => false,
                Some("y") => true,
                Some(other) => {
                    return Err(GatewayError::BadRequest(format!(
                        "dups '{}' is neither y nor n",
                        printable(other)
                    )))
                }
            };
            let bytes = bytes.as_deref().map(parse_entity_bytes).transpose()?;
            let scope = match scope.as_deref() {
                None | Some("all") => DagScope::All,
                Some("entity") => DagScope::Entity,
                Some("block") => DagScope::Block,
                Some(other) => {
                    return Err(GatewayError::BadRequest(format!(
                        "dag-scope '{}' is not one of block, entity, all",
                        printable(other)
                    )))
                }
            };
            // entity-bytes implies dag-scope=entity
            let scope = if bytes.is_some() { DagScope::Entity } else { scope };
            Format::Car(CarOptions { scope, bytes, dups })
        }
    };
    Ok(IpfsRequest { cid, format })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Raw,
    Car,
    File,
}

#[derive(Debug)]
enum Accepted {
    Raw,
    Car {
        dups: Option<String>,
        order: Option<String>,
        version: Option<String>,
    },
}

/// The first IPLD type in an `Accept` list, with its CAR parameters; `None`
/// when the list names neither (a browser's `text/html, */*`).
fn parse_accept(accept: &str) -> Result<Option<Accepted>, GatewayError> {
    if accept.len() > 1024 {
        return Err(GatewayError::BadRequest(
            "the Accept header is longer than 1024 bytes".into(),
        ));
    }
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        match media.as_str() {
            "application/vnd.ipld.raw" => return Ok(Some(Accepted::Raw)),
            "application/vnd.ipld.car" => {
                let (mut dups, mut order, mut version) = (None, None, None);
                for p in parts {
                    let Some((k, v)) = p.split_once('=') else { continue };
                    let v = v.trim().trim_matches('"').to_string();
                    match k.trim() {
                        "dups" => dups = Some(v),
                        "order" => order = Some(v),
                        "version" => version = Some(v),
                        _ => {}
                    }
                }
                return Ok(Some(Accepted::Car { dups, order, version }));
            }
            _ => {}
        }
    }
    Ok(None)
}

fn parse_entity_bytes(text: &str) -> Result<EntityBytes, GatewayError> {
    let bad = || {
        GatewayError::BadRequest(format!(
            "entity-bytes '{}' is not from:to (integers, or * for the end)",
            printable(text)
        ))
    };
    let (from, to) = text.split_once(':').ok_or_else(bad)?;
    let from: i64 = from.parse().map_err(|_| bad())?;
    let to = match to {
        "*" => None,
        t => Some(t.parse::<i64>().map_err(|_| bad())?),
    };
    if let Some(t) = to {
        // both from the start: to before from is no range at all
        if from >= 0 && t >= 0 && t < from {
            return Err(GatewayError::BadRequest(format!(
                "entity-bytes '{}' ends before it starts",
                printable(text)
            )));
        }
    }
    Ok(EntityBytes { from, to })
}

impl EntityBytes {
    /// The byte range (end exclusive) this asks of a file of `size` bytes:
    /// `Ok(None)` for an empty range (answered as `dag-scope=block`), an
    /// error for one wholly after the end (400, known before sending).
    pub fn resolve(&self, size: u64) -> Result<Option<Range<u64>>, GatewayError> {
        let size_i = i128::from(size);
        let at = |v: i64| -> i128 {
            let v = i128::from(v);
            if v < 0 {
                (size_i + v).max(0)
            } else {
                v
            }
        };
        let from = at(self.from);
        let last = match self.to {
            None => size_i - 1,
            Some(t) if t < 0 && size_i + i128::from(t) < 0 => return Ok(None),
            Some(t) => at(t).min(size_i - 1),
        };
        if size > 0 && from >= size_i {
            return Err(GatewayError::BadRequest(format!(
                "entity-bytes starts at {from}, after the file's {size} bytes"
            )));
        }
        if last < from || size == 0 {
            return Ok(None);
        }
        // both within 0..size now
        Ok(Some(from as u64..(last + 1) as u64))
    }
}

/// An HTTP `Range` header against a file of `size` bytes (RFC 9110 14.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAsk {
    /// No (usable) Range: the whole file. Syntax we do not serve (several
    /// ranges, other units) is ignored, as the RFC allows.
    Whole,
    /// One satisfiable range, end exclusive.
    Part(Range<u64>),
    /// A range that no byte of the file satisfies: 416.
    Unsatisfiable,
}

/// Parses a `Range` header value.
pub fn parse_range_header(value: &str, size: u64) -> RangeAsk {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let digits = |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|c| c.is_ascii_digit());
    if a.is_empty() {
        // suffix: the last b bytes
        if !digits(b) {
            return RangeAsk::Whole;
        }
        let n: u64 = b.parse().unwrap_or(u64::MAX);
        if n == 0 || size == 0 {
            return RangeAsk::Unsatisfiable;
        }
        return RangeAsk::Part(size.saturating_sub(n)..size);
    }
    if !digits(a) || !(b.is_empty() || digits(b)) {
        return RangeAsk::Whole;
    }
    let first: u64 = a.parse().unwrap_or(u64::MAX);
    let last: u64 = if b.is_empty() {
        u64::MAX
    } else {
        b.parse().unwrap_or(u64::MAX)
    };
    if last < first {
        return RangeAsk::Whole;
    }
    if first >= size {
        return RangeAsk::Unsatisfiable;
    }
    RangeAsk::Part(first..last.min(size - 1) + 1)
}

/// `%XX` decoding of a query value (`+` kept: these values never hold spaces).
fn percent_decode(v: &str) -> Result<String, GatewayError> {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| GatewayError::BadRequest("a bad %-escape in the query".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| GatewayError::BadRequest("the query is not UTF-8".into()))
}

/// `s` cut to 64 characters with control characters dropped, for one-line
/// error messages that quote a request.
pub fn printable(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(64).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CID: &str = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";

    #[test]
    fn format_precedence_and_defaults() {
        let r = parse(CID, None, None).unwrap();
        assert_eq!(r.format, Format::File);
        assert_eq!(parse(CID, Some("format=raw"), None).unwrap().format, Format::Raw);
        assert_eq!(
            parse(CID, None, Some("application/vnd.ipld.raw")).unwrap().format,
            Format::Raw
        );
        // format wins over Accept
        let car = parse(CID, Some("format=car"), Some("application/vnd.ipld.raw")).unwrap();
        assert_eq!(
            car.format,
            Format::Car(CarOptions {
                scope: DagScope::All,
                bytes: None,
                dups: false
            })
        );
        let car = parse(
            CID,
            None,
            Some("text/html, application/vnd.ipld.car; version=1; order=dfs; dups=y"),
        )
        .unwrap();
        assert!(matches!(car.format, Format::Car(CarOptions { dups: true, .. })));
        assert_eq!(
            parse(CID, None, Some("text/html,*/*")).unwrap().format,
            Format::File
        );
    }

    #[test]
    fn bad_requests_are_one_line_errors() {
        for (path, query, accept) in [
            ("nope", None, None),
            ("", None, None),
            (CID, Some("format=tar"), None),
            (CID, Some("format=raw&format=car"), None),
            (CID, Some("format=car&dag-scope=most"), None),
            (CID, Some("format=car&entity-bytes=5"), None),
            (CID, Some("format=car&entity-bytes=9:2"), None),
            (CID, Some("format=car&entity-bytes=a:b"), None),
            (CID, Some("format=car&car-version=2"), None),
            (CID, Some("format=car&car-order=bfs"), None),
            (CID, Some("format=car&car-dups=maybe"), None),
            (CID, Some("format=raw&dag-scope=all"), None),
            (CID, Some("entity-bytes=0:1"), None),
            (CID, Some("format=%zz"), None),
            (CID, None, Some("application/vnd.ipld.car; version=2")),
        ] {
            let e = parse(path, query, accept).unwrap_err();
            assert!(matches!(e, GatewayError::BadRequest(_)), "{path} {query:?}: {e}");
            assert_eq!(e.to_string().lines().count(), 1);
        }
        let long = "b".repeat(MAX_CID_LEN + 1);
        assert!(matches!(
            parse(&long, None, None),
            Err(GatewayError::BadRequest(_))
        ));
        assert!(matches!(
            parse(&format!("{CID}/a/b"), None, None),
            Err(GatewayError::NotFound(_))
        ));
        assert!(parse(&format!("{CID}/"), None, None).is_ok());
    }

    #[test]
    fn entity_bytes_resolve() {
        let eb = |from, to| EntityBytes { from, to };
        assert_eq!(eb(0, None).resolve(10).unwrap(), Some(0..10));
        assert_eq!(eb(2, Some(4)).resolve(10).unwrap(), Some(2..5));
        assert_eq!(eb(2, Some(400)).resolve(10).unwrap(), Some(2..10));
        assert_eq!(eb(-3, None).resolve(10).unwrap(), Some(7..10));
        assert_eq!(eb(-30, None).resolve(10).unwrap(), Some(0..10));
        assert_eq!(eb(1, Some(-2)).resolve(10).unwrap(), Some(1..9));
        assert_eq!(eb(8, Some(-5)).resolve(10).unwrap(), None);
        assert_eq!(eb(0, Some(-11)).resolve(10).unwrap(), None);
        assert_eq!(eb(0, None).resolve(0).unwrap(), None);
        assert!(eb(10, None).resolve(10).is_err());
    }

    #[test]
    fn range_headers() {
        use RangeAsk::*;
        assert_eq!(parse_range_header("bytes=0-0", 10), Part(0..1));
        assert_eq!(parse_range_header("bytes=3-", 10), Part(3..10));
        assert_eq!(parse_range_header("bytes=3-99", 10), Part(3..10));
        assert_eq!(parse_range_header("bytes=-4", 10), Part(6..10));
        assert_eq!(parse_range_header("bytes=-40", 10), Part(0..10));
        assert_eq!(parse_range_header("bytes=10-", 10), Unsatisfiable);
        assert_eq!(parse_range_header("bytes=-0", 10), Unsatisfiable);
        assert_eq!(parse_range_header("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range_header("bytes=5-2", 10), Whole);
        assert_eq!(parse_range_header("bytes=0-1,4-5", 10), Whole);
        assert_eq!(parse_range_header("items=0-1", 10), Whole);
        assert_eq!(parse_range_header("bytes=x-1", 10), Whole);
        assert_eq!(parse_range_header("bytes=99999999999999999999-", 10), Whole);
    }

    proptest! {
        #[test]
        fn parse_never_panics(path in "\\PC{0,80}", query in proptest::option::of("\\PC{0,80}"), accept in proptest::option::of("\\PC{0,80}")) {
            let _ = parse(&path, query.as_deref(), accept.as_deref());
        }

        #[test]
        fn a_satisfiable_range_is_inside_the_file(value in "bytes=[0-9]{0,4}-[0-9]{0,4}", size in 0u64..5000) {
            if let RangeAsk::Part(r) = parse_range_header(&value, size) {
                prop_assert!(r.start < r.end && r.end <= size);
            }
        }

        #[test]
        fn entity_bytes_stay_inside_the_file(from in -6000i64..6000, to in proptest::option::of(-6000i64..6000), size in 0u64..5000) {
            if let Ok(Some(r)) = (EntityBytes { from, to }).resolve(size) {
                prop_assert!(r.start < r.end && r.end <= size);
            }
        }
    }
}
