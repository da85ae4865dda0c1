// livemicrod's state on disk: sessions, users and the audit log in SQLite
// (WAL journal, synchronous=FULL: a committed row survives a power cut),
// under the state directory.  Used from one thread (the daemon's main loop),
// so a database held by someone else waits at most kBusyTimeoutMs before a
// StoreError: the daemon answers 503 rather than stall every client.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

struct sqlite3;

namespace livemicro::orchestrator {

class StoreError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

struct SessionRecord {
  std::string id, user, role, microscope;
  std::string token_sha256; // the bearer token, hashed
  std::string digest_ha1;   // MD5(id:realm:token) for RTSP Digest auth
  int64_t created_unix_us = 0;
};

struct AuditRecord {
  int64_t id = 0;
  int64_t time_unix_us = 0;
  std::string user, role, session, microscope, action, detail, result;
};

struct AnnotationRecord {
  int64_t id = 0;
  std::string microscope, session, user;
  std::string kind; // point, arrow, region
  std::string label;
  std::string points_json; // [[x_um, y_um], ...]
  int64_t created_unix_us = 0;
  // points_json read back (what cannot be read is left out).
  std::vector<std::pair<double, double>> points_um () const;
};

class Store {
public:
  static constexpr int kBusyTimeoutMs = 200;

  // Opens (creating if needed) `path`; throws StoreError naming the path.
  explicit Store (const std::string &path);
  ~Store ();
  Store (const Store &) = delete;
  Store &operator= (const Store &) = delete;

  void insert_session (const SessionRecord &s);
  std::optional<SessionRecord> session (const std::string &id) const;
  std::optional<SessionRecord> session_by_token_sha256 (const std::string &h) const;
  // Live (not ended) sessions, all or of one microscope, oldest first.
  std::vector<SessionRecord> sessions (const std::string &microscope = "") const;
  // Marks a session ended; false when it was unknown or already ended.
  bool end_session (const std::string &id);

  void append_audit (const AuditRecord &r);
  // Oldest first; `microscope` empty: all.
  std::vector<AuditRecord> audit (int64_t after_id = 0, int limit = 1000,
                                  const std::string &microscope = "") const;

  int64_t insert_annotation (const AnnotationRecord &a);
  std::vector<AnnotationRecord> annotations (const std::string &microscope,
                                             const std::string &session = "") const;
  std::optional<AnnotationRecord> annotation (int64_t id) const;
  bool delete_annotation (int64_t id);

  // Runs `fn` in one transaction (all its writes or none); a StoreError
  // (database locked, unwritable, full) rolls back and is rethrown.
  void transaction (const std::function<void ()> &fn);

  // Small persistent values (e.g. the last control epoch per microscope).
  std::string get_value (const std::string &key, const std::string &fallback = "") const;
  void set_value (const std::string &key, const std::string &value);

  const std::string &path () const { return path_; }

private:
  void exec (const char *sql);
  std::string path_;
  sqlite3 *db_ = nullptr;
};

} // namespace livemicro::orchestrator
