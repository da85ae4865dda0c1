// A small synchronous client of etcd 3.4's JSON gateway (/v3/kv, /v3/lease,
// /v3/maintenance) over libsoup: the edge cloud's consensus store, reached
// without a gRPC library.  Keys and values are plain strings here; the
// gateway's base64 and its 64-bit integers sent as JSON strings stay inside
// etcd_client.cpp, the only place that knows the gateway's JSON.
//
// Several endpoints (the members of one etcd cluster): a request goes to the
// current one and, when it cannot be reached, to the next, so a lost member
// changes nothing.  Blocking, with a per-request timeout: use one client per
// thread (a SoupSession belongs to the thread that made it).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

typedef struct _SoupSession SoupSession;

namespace livemicro::cluster {

// No endpoint answered, or etcd refused the request (its message says why).
class EtcdError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

struct KeyValue {
  std::string key, value;
  int64_t create_revision = 0, mod_revision = 0, version = 0;
  int64_t lease = 0; // 0: none
};

// A condition of a transaction on one key.
struct Compare {
  enum class Target { kCreateRevision, kModRevision, kVersion, kValue, kLease };
  std::string key;
  Target target = Target::kModRevision;
  int64_t number = 0; // for the revisions, version and lease
  std::string value;  // for kValue
  // Every condition here is "equal", the one the edge cloud needs.
};

// An operation of a transaction.
struct Op {
  enum class Kind { kPut, kRange, kDelete };
  Kind kind = Kind::kPut;
  std::string key, value;
  int64_t lease = 0;   // kPut
  bool prefix = false; // kRange, kDelete: every key that starts with `key`
};

struct TxnResult {
  bool succeeded = false;
  int64_t revision = 0;         // the store's revision after the transaction
  std::vector<KeyValue> ranged; // what kRange operations of the branch taken read
};

struct MemberStatus {
  std::string endpoint;
  bool healthy = false;
  std::string version, error;
  std::string member_id, leader; // as etcd prints them (decimal)
  int64_t revision = 0;
};

class EtcdClient {
public:
  // `endpoints`: base URLs (http://host:port).  `timeout_s`: per request and
  // endpoint (libsoup counts whole seconds).
  explicit EtcdClient (std::vector<std::string> endpoints, unsigned timeout_s = 1);
  ~EtcdClient ();
  EtcdClient (const EtcdClient &) = delete;
  EtcdClient &operator= (const EtcdClient &) = delete;

  const std::vector<std::string> &endpoints () const { return endpoints_; }

  struct Lease {
    int64_t id = 0;
    int ttl_s = 0;
  };
  Lease grant (int ttl_s);
  // The lease's remaining TTL in seconds once renewed; 0 when it has expired.
  int keepalive (int64_t lease);
  void revoke (int64_t lease);

  // Returns the store's revision after the put.
  int64_t put (const std::string &key, const std::string &value, int64_t lease = 0);
  std::optional<KeyValue> get (const std::string &key);
  // Every key starting with `prefix`, in key order; `revision` gets the store's.
  std::vector<KeyValue> list (const std::string &prefix, int64_t *revision = nullptr);
  // Returns how many keys were deleted.
  int64_t remove (const std::string &key, bool prefix = false);
  TxnResult txn (const std::vector<Compare> &compare, const std::vector<Op> &success,
                 const std::vector<Op> &failure = {});

  // Each endpoint asked on its own (not through failover): is it up, which
  // member leads.
  std::vector<MemberStatus> status ();

  // The first key after every key that starts with `prefix` (etcd's range_end).
  static std::string prefix_end (const std::string &prefix);

private:
  // POSTs `body` to `path` of the current endpoint, moving on to the next
  // ones when one cannot be reached; returns the response text (HTTP 200).
  std::string call (const std::string &path, const std::string &body);
  std::string call_one (const std::string &endpoint, const std::string &path, const std::string &body,
                        bool &reached);

  std::vector<std::string> endpoints_;
  size_t current_ = 0;
  SoupSession *session_ = nullptr;
};

} // namespace livemicro::cluster
