#include "store.h"

#include <glib.h>
#include <json-glib/json-glib.h>
#include <sqlite3.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace livemicro::orchestrator {

namespace {

// A prepared statement that finalizes itself.
class Stmt {
public:
  Stmt (sqlite3 *db, const char *sql)
  {
    if (sqlite3_prepare_v2 (db, sql, -1, &s_, nullptr) != SQLITE_OK)
      throw StoreError (std::string ("SQL error: ") + sqlite3_errmsg (db));
  }
  ~Stmt () { sqlite3_finalize (s_); }
  Stmt &bind (int i, const std::string &v)
  {
    sqlite3_bind_text (s_, i, v.c_str (), (int)v.size (), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt &bind (int i, int64_t v)
  {
    sqlite3_bind_int64 (s_, i, v);
    return *this;
  }
  bool step ()
  {
    int rc = sqlite3_step (s_);
    if (rc == SQLITE_ROW)
      return true;
    if (rc == SQLITE_DONE)
      return false;
    throw StoreError (std::string ("SQL error: ") + sqlite3_errmsg (sqlite3_db_handle (s_)));
  }
  std::string text (int col) const
  {
    const unsigned char *t = sqlite3_column_text (s_, col);
    return t ? reinterpret_cast<const char *> (t) : "";
  }
  int64_t integer (int col) const { return sqlite3_column_int64 (s_, col); }

private:
  sqlite3_stmt *s_ = nullptr;
};

const char *kSchema = R"SQL(
CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY,
  user TEXT NOT NULL,
  role TEXT NOT NULL,
  microscope TEXT NOT NULL,
  token_sha256 TEXT NOT NULL UNIQUE,
  digest_ha1 TEXT NOT NULL,
  created_unix_us INTEGER NOT NULL,
  ended_unix_us INTEGER
);
CREATE INDEX IF NOT EXISTS sessions_microscope ON sessions (microscope);
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  time_unix_us INTEGER NOT NULL,
  user TEXT NOT NULL,
  role TEXT NOT NULL,
  session TEXT NOT NULL,
  microscope TEXT NOT NULL,
  action TEXT NOT NULL,
  detail TEXT NOT NULL,
  result TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS annotations (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  microscope TEXT NOT NULL,
  session TEXT NOT NULL,
  user TEXT NOT NULL,
  kind TEXT NOT NULL,
  label TEXT NOT NULL,
  points_json TEXT NOT NULL,
  created_unix_us INTEGER NOT NULL,
  deleted_unix_us INTEGER
);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- The audit log is append-only: nothing may change or remove its rows.
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
  BEGIN SELECT RAISE (ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
  BEGIN SELECT RAISE (ABORT, 'the audit log is append-only'); END;
)SQL";

SessionRecord
read_session (const Stmt &s)
{
  SessionRecord r;
  r.id = s.text (0);
  r.user = s.text (1);
  r.role = s.text (2);
  r.microscope = s.text (3);
  r.token_sha256 = s.text (4);
  r.digest_ha1 = s.text (5);
  r.created_unix_us = s.integer (6);
  return r;
}

#define SESSION_COLUMNS "id, user, role, microscope, token_sha256, digest_ha1, created_unix_us"

} // namespace

Store::Store (const std::string &path) : path_ (path)
{
  // Token hashes and RTSP digest HA1s live here: readable by the daemon's
  // user only (SQLite gives its -wal and -shm files the same mode).
  int fd = ::open (path.c_str (), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd >= 0) {
    ::fchmod (fd, 0600);
    ::close (fd);
  }
  if (sqlite3_open_v2 (path.c_str (), &db_,
                       SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr)
      != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg (db_) : "out of memory";
    sqlite3_close (db_);
    db_ = nullptr;
    throw StoreError ("cannot open state database '" + path + "': " + msg);
  }
  sqlite3_busy_timeout (db_, kBusyTimeoutMs);
  try {
    exec ("PRAGMA journal_mode=WAL");
    exec ("PRAGMA synchronous=FULL");
    exec ("PRAGMA foreign_keys=ON");
    exec (kSchema);
  } catch (const StoreError &e) {
    sqlite3_close (db_);
    db_ = nullptr;
    throw StoreError ("state database '" + path + "': " + e.what ());
  }
}

Store::~Store ()
{
  sqlite3_close (db_);
}

void
Store::exec (const char *sql)
{
  char *err = nullptr;
  if (sqlite3_exec (db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free (err);
    throw StoreError (msg);
  }
}

void
Store::insert_session (const SessionRecord &s)
{
  Stmt st (db_, "INSERT INTO sessions (" SESSION_COLUMNS ") VALUES (?, ?, ?, ?, ?, ?, ?)");
  st.bind (1, s.id).bind (2, s.user).bind (3, s.role).bind (4, s.microscope);
  st.bind (5, s.token_sha256).bind (6, s.digest_ha1).bind (7, s.created_unix_us);
  st.step ();
}

std::optional<SessionRecord>
Store::session (const std::string &id) const
{
  Stmt st (db_, "SELECT " SESSION_COLUMNS " FROM sessions WHERE id = ? AND ended_unix_us IS NULL");
  st.bind (1, id);
  if (!st.step ())
    return std::nullopt;
  return read_session (st);
}

std::optional<SessionRecord>
Store::session_by_token_sha256 (const std::string &h) const
{
  Stmt st (db_, "SELECT " SESSION_COLUMNS " FROM sessions WHERE token_sha256 = ? AND ended_unix_us IS NULL");
  st.bind (1, h);
  if (!st.step ())
    return std::nullopt;
  return read_session (st);
}

std::vector<SessionRecord>
Store::sessions (const std::string &microscope) const
{
  std::vector<SessionRecord> out;
  Stmt st (db_, microscope.empty () ? "SELECT " SESSION_COLUMNS " FROM sessions WHERE ended_unix_us IS NULL "
                                      "ORDER BY created_unix_us"
                                    : "SELECT " SESSION_COLUMNS " FROM sessions WHERE ended_unix_us IS NULL "
                                      "AND microscope = ? ORDER BY created_unix_us");
  if (!microscope.empty ())
    st.bind (1, microscope);
  while (st.step ())
    out.push_back (read_session (st));
  return out;
}

bool
Store::end_session (const std::string &id)
{
  Stmt st (db_, "UPDATE sessions SET ended_unix_us = ? WHERE id = ? AND ended_unix_us IS NULL");
  st.bind (1, g_get_real_time ()).bind (2, id);
  st.step ();
  return sqlite3_changes (db_) > 0;
}

void
Store::append_audit (const AuditRecord &r)
{
  Stmt st (db_, "INSERT INTO audit (time_unix_us, user, role, session, microscope, action, "
                "detail, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
  st.bind (1, r.time_unix_us ? r.time_unix_us : g_get_real_time ());
  st.bind (2, r.user).bind (3, r.role).bind (4, r.session).bind (5, r.microscope);
  st.bind (6, r.action).bind (7, r.detail).bind (8, r.result);
  st.step ();
}

std::vector<AuditRecord>
Store::audit (int64_t after_id, int limit, const std::string &microscope) const
{
  std::vector<AuditRecord> out;
  Stmt st (db_, microscope.empty ()
                    ? "SELECT id, time_unix_us, user, role, session, microscope, action, detail, "
                      "result FROM audit WHERE id > ? ORDER BY id LIMIT ?"
                    : "SELECT id, time_unix_us, user, role, session, microscope, action, detail, "
                      "result FROM audit WHERE id > ? AND microscope = ? ORDER BY id LIMIT ?");
  st.bind (1, after_id);
  if (microscope.empty ())
    st.bind (2, (int64_t)limit);
  else
    st.bind (2, microscope).bind (3, (int64_t)limit);
  while (st.step ()) {
    AuditRecord r;
    r.id = st.integer (0);
    r.time_unix_us = st.integer (1);
    r.user = st.text (2);
    r.role = st.text (3);
    r.session = st.text (4);
    r.microscope = st.text (5);
    r.action = st.text (6);
    r.detail = st.text (7);
    r.result = st.text (8);
    out.push_back (r);
  }
  return out;
}

int64_t
Store::insert_annotation (const AnnotationRecord &a)
{
  Stmt st (db_, "INSERT INTO annotations (microscope, session, user, kind, label, points_json, "
                "created_unix_us) VALUES (?, ?, ?, ?, ?, ?, ?)");
  st.bind (1, a.microscope).bind (2, a.session).bind (3, a.user).bind (4, a.kind);
  st.bind (5, a.label).bind (6, a.points_json);
  st.bind (7, a.created_unix_us ? a.created_unix_us : g_get_real_time ());
  st.step ();
  return sqlite3_last_insert_rowid (db_);
}

namespace {

AnnotationRecord
read_annotation (const Stmt &s)
{
  AnnotationRecord a;
  a.id = s.integer (0);
  a.microscope = s.text (1);
  a.session = s.text (2);
  a.user = s.text (3);
  a.kind = s.text (4);
  a.label = s.text (5);
  a.points_json = s.text (6);
  a.created_unix_us = s.integer (7);
  return a;
}

} // namespace

std::vector<AnnotationRecord>
Store::annotations (const std::string &microscope, const std::string &session) const
{
  std::vector<AnnotationRecord> out;
  Stmt st (db_, session.empty ()
                    ? "SELECT id, microscope, session, user, kind, label, points_json, created_unix_us "
                      "FROM annotations WHERE deleted_unix_us IS NULL AND microscope = ? ORDER BY id"
                    : "SELECT id, microscope, session, user, kind, label, points_json, created_unix_us "
                      "FROM annotations WHERE deleted_unix_us IS NULL AND microscope = ? AND session = ? "
                      "ORDER BY id");
  st.bind (1, microscope);
  if (!session.empty ())
    st.bind (2, session);
  while (st.step ())
    out.push_back (read_annotation (st));
  return out;
}

std::optional<AnnotationRecord>
Store::annotation (int64_t id) const
{
  Stmt st (db_, "SELECT id, microscope, session, user, kind, label, points_json, created_unix_us "
                "FROM annotations WHERE deleted_unix_us IS NULL AND id = ?");
  st.bind (1, id);
  if (!st.step ())
    return std::nullopt;
  return read_annotation (st);
}

bool
Store::delete_annotation (int64_t id)
{
  Stmt st (db_, "UPDATE annotations SET deleted_unix_us = ? WHERE id = ? AND deleted_unix_us IS NULL");
  st.bind (1, g_get_real_time ()).bind (2, id);
  st.step ();
  return sqlite3_changes (db_) > 0;
}

void
Store::transaction (const std::function<void ()> &fn)
{
  exec ("BEGIN IMMEDIATE");
  try {
    fn ();
    exec ("COMMIT");
  } catch (...) {
    sqlite3_exec (db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

std::string
Store::get_value (const std::string &key, const std::string &fallback) const
{
  Stmt st (db_, "SELECT value FROM kv WHERE key = ?");
  st.bind (1, key);
  return st.step () ? st.text (0) : fallback;
}

void
Store::set_value (const std::string &key, const std::string &value)
{
  Stmt st (
      db_,
      "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value");
  st.bind (1, key).bind (2, value);
  st.step ();
}

std::vector<std::pair<double, double>>
AnnotationRecord::points_um () const
{
  std::vector<std::pair<double, double>> points;
  g_autoptr (JsonParser) p = json_parser_new ();
  if (!json_parser_load_from_data (p, points_json.c_str (), (gssize)points_json.size (), nullptr)
      || !JSON_NODE_HOLDS_ARRAY (json_parser_get_root (p)))
    return points;
  JsonArray *a = json_node_get_array (json_parser_get_root (p));
  for (guint i = 0; i < json_array_get_length (a); i++) {
    JsonNode *xy = json_array_get_element (a, i);
    if (!JSON_NODE_HOLDS_ARRAY (xy) || json_array_get_length (json_node_get_array (xy)) != 2)
      continue;
    JsonArray *pair = json_node_get_array (xy);
    points.emplace_back (json_array_get_double_element (pair, 0), json_array_get_double_element (pair, 1));
  }
  return points;
}

} // namespace livemicro::orchestrator
