// Precompiled for RocksDB's sources in debug builds (rocksdb-cxx, next to
// this file): the standard headers and RocksDB's own most of its sources
// include. Only headers that define nothing at namespace scope: with them
// precompiled, RocksDB's objects define the same symbols as without (a
// header such as db/dbformat.h, which defines a static object, would add a
// copy of it and its initialiser to every object; issue #18).
#include <algorithm>
#include <array>
#include <atomic>
#include <cassert>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "logging/logging.h"
#include "port/port.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "rocksdb/options.h"
#include "rocksdb/slice.h"
#include "rocksdb/status.h"
#include "test_util/sync_point.h"
#include "util/coding.h"
#include "util/string_util.h"
