// See cluster_member.h.  The values kept in etcd (a node's record, an audit
// row) are JSON, written and read here only.
#include "cluster_member.h"
#include "json_doc.h"

#include <glib.h>
#include <json-glib/json-glib.h>

#include <algorithm>
#include <chrono>

namespace livemicro::cluster {

namespace {

int64_t
now_us ()
{
  return g_get_monotonic_time ();
}

} // namespace

std::string
node_record_json (const NodeInfo &n)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  member (b, "name", n.name);
  member (b, "site", n.site);
  member (b, "http_url", n.http_url);
  member (b, "rtsp_url", n.rtsp_url);
  member (b, "capacity_viewers", (int64_t)n.capacity_viewers);
  json_builder_set_member_name (b, "load");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "cpu");
  json_builder_add_double_value (b, n.load.cpu);
  member (b, "viewers", (int64_t)n.load.viewers);
  member (b, "encoders", (int64_t)n.load.encoders);
  member (b, "sessions", (int64_t)n.load.sessions);
  json_builder_end_object (b);
  json_builder_set_member_name (b, "microscopes");
  json_builder_begin_array (b);
  for (const auto &m : n.microscopes)
    json_builder_add_string_value (b, m.c_str ());
  json_builder_end_array (b);
  json_builder_end_object (b);
  return to_json (b);
}

namespace {

// A value kept in etcd: a JSON object, nullptr root when it is not one.
struct Parsed : JsonDoc {
  using JsonDoc::JsonDoc;
  std::string str (const char *name) const { return JsonDoc::str (root, name); }
  int64_t integer (const char *name) const { return JsonDoc::integer (root, name); }
};

std::optional<NodeInfo>
parse_node (const KeyValue &kv)
{
  Parsed p (kv.value);
  if (!p.root)
    return std::nullopt; // not written by a LiveMicro node: not shown
  NodeInfo n;
  n.name = p.str ("name");
  n.site = p.str ("site");
  n.http_url = p.str ("http_url");
  n.rtsp_url = p.str ("rtsp_url");
  n.capacity_viewers = (int)p.integer ("capacity_viewers");
  n.lease = kv.lease;
  if (JsonObject *load = JsonDoc::object (p.root, "load")) {
    n.load.cpu = JsonDoc::number (load, "cpu");
    n.load.viewers = (int)JsonDoc::integer (load, "viewers");
    n.load.encoders = (int)JsonDoc::integer (load, "encoders");
    n.load.sessions = (int)JsonDoc::integer (load, "sessions");
  }
  if (JsonArray *a = JsonDoc::array (p.root, "microscopes"))
    for (guint i = 0; i < json_array_get_length (a); i++)
      if (const char *m = json_array_get_string_element (a, i))
        n.microscopes.push_back (m);
  return n;
}

std::string
render_session (const SessionRecord &s, const std::string &serving_node, const std::string &site)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  member (b, "serving_node", serving_node);
  member (b, "site", site);
  member (b, "id", s.id);
  member (b, "user", s.user);
  member (b, "role", s.role);
  member (b, "microscope", s.microscope);
  member (b, "token_sha256", s.token_sha256);
  member (b, "digest_ha1", s.digest_ha1);
  member (b, "created_unix_us", s.created_unix_us);
  json_builder_end_object (b);
  return to_json (b);
}

std::optional<ClusterSession>
parse_session (const std::string &text, int64_t revision)
{
  Parsed p (text);
  if (!p.root || p.str ("id").empty () || p.str ("token_sha256").empty ())
    return std::nullopt;
  SessionRecord r{p.str ("id"),
                  p.str ("user"),
                  p.str ("role"),
                  p.str ("microscope"),
                  p.str ("token_sha256"),
                  p.str ("digest_ha1"),
                  p.integer ("created_unix_us")};
  return ClusterSession{std::move (r), p.str ("serving_node"), p.str ("site"), revision};
}

std::string
render_annotation (const orchestrator::AnnotationRecord &a)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  member (b, "id", a.id);
  member (b, "microscope", a.microscope);
  member (b, "session", a.session);
  member (b, "user", a.user);
  member (b, "kind", a.kind);
  member (b, "label", a.label);
  member (b, "points_json", a.points_json);
  member (b, "created_unix_us", a.created_unix_us);
  json_builder_end_object (b);
  return to_json (b);
}

std::optional<orchestrator::AnnotationRecord>
parse_annotation (const std::string &text)
{
  Parsed p (text);
  if (!p.root || p.integer ("id") <= 0)
    return std::nullopt;
  orchestrator::AnnotationRecord a;
  a.id = p.integer ("id");
  a.microscope = p.str ("microscope");
  a.session = p.str ("session");
  a.user = p.str ("user");
  a.kind = p.str ("kind");
  a.label = p.str ("label");
  a.points_json = p.str ("points_json");
  a.created_unix_us = p.integer ("created_unix_us");
  return a;
}

std::string
render_relay (const RelayEndpoint &r)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  member (b, "node", r.node);
  member (b, "host", r.host);
  member (b, "port", (int64_t)r.port);
  json_builder_end_object (b);
  return to_json (b);
}

std::string
render_audit (const std::string &node, const AuditRecord &r, int64_t fence_revision)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  member (b, "node", node);
  member (b, "id", r.id);
  member (b, "time_unix_us", r.time_unix_us);
  member (b, "user", r.user);
  member (b, "role", r.role);
  member (b, "session", r.session);
  member (b, "microscope", r.microscope);
  member (b, "action", r.action);
  member (b, "detail", r.detail);
  member (b, "result", r.result);
  member (b, "fence_revision", fence_revision);
  json_builder_end_object (b);
  return to_json (b);
}

void
participant_member (JsonBuilder *b, const orchestrator::Participant &p)
{
  json_builder_begin_object (b);
  member (b, "session", p.session);
  member (b, "user", p.user);
  member (b, "role", p.role);
  json_builder_end_object (b);
}

orchestrator::Participant
parse_participant (JsonObject *o)
{
  return {JsonDoc::str (o, "session"), JsonDoc::str (o, "user"), JsonDoc::str (o, "role")};
}

std::string
render_control (const ControlState &c)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  member (b, "epoch", (int64_t)c.epoch);
  if (c.holder) {
    json_builder_set_member_name (b, "holder");
    json_builder_begin_object (b);
    member (b, "lease", c.holder->id);
    member (b, "epoch", (int64_t)c.holder->epoch);
    json_builder_set_member_name (b, "participant");
    participant_member (b, c.holder->holder);
    json_builder_end_object (b);
  }
  json_builder_set_member_name (b, "queue");
  json_builder_begin_array (b);
  for (const auto &p : c.queue)
    participant_member (b, p);
  json_builder_end_array (b);
  json_builder_end_object (b);
  return to_json (b);
}

// Nullopt for a value no LiveMicro node wrote: an unreadable control is not
// adopted (the home node's own state goes on and is written over it).
std::optional<ControlState>
parse_control (const std::string &text)
{
  Parsed p (text);
  if (!p.root || p.integer ("epoch") <= 0)
    return std::nullopt;
  ControlState c;
  c.epoch = (uint64_t)p.integer ("epoch");
  if (JsonObject *h = JsonDoc::object (p.root, "holder")) {
    orchestrator::Lease l;
    l.id = JsonDoc::str (h, "lease");
    l.epoch = (uint64_t)std::max<int64_t> (0, JsonDoc::integer (h, "epoch"));
    l.holder = parse_participant (JsonDoc::object (h, "participant"));
    if (l.id.empty () || l.holder.session.empty () || l.epoch == 0 || l.epoch > c.epoch)
      return std::nullopt;
    c.holder = std::move (l);
  }
  if (JsonArray *q = JsonDoc::array (p.root, "queue"))
    for (guint i = 0; i < json_array_get_length (q); i++) {
      JsonNode *n = json_array_get_element (q, i);
      if (!JSON_NODE_HOLDS_OBJECT (n))
        return std::nullopt;
      c.queue.push_back (parse_participant (json_node_get_object (n)));
      if (c.queue.back ().session.empty ())
        return std::nullopt;
    }
  return c;
}

std::string
render_user (const std::string &name, const std::vector<std::string> &roles)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  member (b, "name", name);
  json_builder_set_member_name (b, "roles");
  json_builder_begin_array (b);
  for (const auto &r : roles)
    json_builder_add_string_value (b, r.c_str ());
  json_builder_end_array (b);
  json_builder_end_object (b);
  return to_json (b);
}

std::optional<std::vector<std::string>>
parse_user_roles (const std::string &text)
{
  Parsed p (text);
  JsonArray *a = p.root ? JsonDoc::array (p.root, "roles") : nullptr;
  if (!a)
    return std::nullopt;
  std::vector<std::string> roles;
  for (guint i = 0; i < json_array_get_length (a); i++)
    if (const char *r = json_array_get_string_element (a, i))
      roles.push_back (r);
  return roles;
}

} // namespace

ClusterMember::ClusterMember (ClusterConfig config, std::vector<std::string> home_microscopes)
    : config_ (std::move (config)), home_microscopes_ (std::move (home_microscopes))
{
  if (config_.lease_ttl_s < 1)
    config_.lease_ttl_s = 1;
  if (config_.prefix.empty () || config_.prefix.back () != '/')
    config_.prefix += '/';
  caller_etcd_ = std::make_unique<EtcdClient> (config_.etcd);
  view_.node = config_.node;
  view_.site = config_.site;
}

ClusterMember::~ClusterMember ()
{
  stop ();
}

std::string
ClusterMember::key (const std::string &kind, const std::string &name) const
{
  return config_.prefix + kind + "/" + name;
}

void
ClusterMember::start ()
{
  if (thread_.joinable ())
    return;
  stopping_ = false;
  thread_ = std::thread ([this] { run (); });
  renewer_ = std::thread ([this] { keep_lease (); });
}

bool
ClusterMember::wait_joined (int timeout_ms)
{
  std::unique_lock<std::mutex> lock (mutex_);
  return changed_.wait_for (lock, std::chrono::milliseconds (timeout_ms), [this] { return view_.joined; });
}

void
ClusterMember::stop ()
{
  if (!thread_.joinable ())
    return;
  {
    std::lock_guard<std::mutex> lock (wake_mutex_);
    stopping_ = true;
  }
  wake_.notify_all ();
  renewer_.join ();
  thread_.join ();
}

void
ClusterMember::set_load (const NodeLoad &load)
{
  std::lock_guard<std::mutex> lock (mutex_);
  load_ = load;
}

ClusterView
ClusterMember::view () const
{
  std::lock_guard<std::mutex> lock (mutex_);
  return view_;
}

std::optional<Fence>
ClusterMember::fence (const std::string &microscope) const
{
  std::lock_guard<std::mutex> lock (mutex_);
  if (!view_.joined || now_us () >= lease_valid_until_us_)
    return std::nullopt;
  auto it = fences_.find (microscope);
  if (it == fences_.end ())
    return std::nullopt;
  return it->second;
}

std::string
ClusterMember::audit_key ()
{
  // Unique across this node's restarts (wall-clock µs) and within one (a
  // counter); the cluster-wide order is etcd's revision, not the key.
  const int64_t seq = ++audit_seq_;
  g_autofree char *k
      = g_strdup_printf ("%016" G_GINT64_FORMAT "-%06" G_GINT64_FORMAT, g_get_real_time (), seq % 1000000);
  return key ("audit", config_.node + "/" + k);
}

bool
ClusterMember::commit_fenced (const Fence &f, const std::vector<AuditRecord> &rows,
                              const ControlState *control)
{
  auto held = fence (f.microscope);
  if (!held || held->revision != f.revision || held->lease != f.lease)
    return false; // known stale here, no need to ask
  std::lock_guard<std::mutex> lock (caller_mutex_);
  std::vector<Op> puts;
  for (const AuditRecord &row : rows)
    puts.push_back ({Op::Kind::kPut, audit_key (), render_audit (config_.node, row, f.revision)});
  if (control)
    puts.push_back ({Op::Kind::kPut, key ("control", f.microscope), render_control (*control)});
  Compare still_owner{key ("homes", f.microscope), Compare::Target::kModRevision, f.revision};
  return caller_etcd_->txn ({still_owner}, puts).succeeded;
}

std::optional<ControlState>
ClusterMember::control (const std::string &microscope)
{
  std::lock_guard<std::mutex> lock (caller_mutex_);
  auto kv = caller_etcd_->get (key ("control", microscope));
  if (!kv)
    return std::nullopt;
  auto c = parse_control (kv->value);
  if (!c)
    g_warning ("edge cloud: the control kept for microscope '%s' is unreadable; this node's own is kept",
               microscope.c_str ());
  return c;
}

void
ClusterMember::commit (const AuditRecord &row)
{
  std::lock_guard<std::mutex> lock (caller_mutex_);
  caller_etcd_->put (audit_key (), render_audit (config_.node, row, 0));
}

std::vector<ClusterAuditRow>
ClusterMember::audit (int64_t after_revision)
{
  std::vector<KeyValue> kvs;
  {
    std::lock_guard<std::mutex> lock (caller_mutex_);
    kvs = caller_etcd_->list (config_.prefix + "audit/");
  }
  std::vector<ClusterAuditRow> rows;
  for (const auto &kv : kvs) {
    if (kv.mod_revision <= after_revision)
      continue;
    Parsed p (kv.value);
    if (!p.root)
      continue;
    AuditRecord r{p.integer ("id"), p.integer ("time_unix_us"), p.str ("user"),
                  p.str ("role"),   p.str ("session"),          p.str ("microscope"),
                  p.str ("action"), p.str ("detail"),           p.str ("result")};
    rows.push_back ({p.str ("node"), std::move (r), p.integer ("fence_revision"), kv.mod_revision});
  }
  std::sort (rows.begin (), rows.end (),
             [] (const ClusterAuditRow &a, const ClusterAuditRow &b) { return a.revision < b.revision; });
  return rows;
}

// ---- sessions of the edge cloud

void
ClusterMember::put_session (const SessionRecord &s, const std::string &serving_node, const std::string &site)
{
  const std::string k = key ("sessions", s.id);
  std::lock_guard<std::mutex> lock (caller_mutex_);
  auto t = caller_etcd_->txn ({{k, Compare::Target::kCreateRevision, 0}},
                              {{Op::Kind::kPut, k, render_session (s, serving_node, site)},
                               {Op::Kind::kPut, key ("tokens", s.token_sha256), s.id}});
  if (!t.succeeded)
    throw EtcdError ("session '" + s.id + "' is already in the edge cloud");
  std::lock_guard<std::mutex> state (mutex_);
  sessions_[s.id] = {s, serving_node, site, t.revision};
}

bool
ClusterMember::move_session (const ClusterSession &s, const std::string &serving_node)
{
  const std::string k = key ("sessions", s.record.id);
  std::lock_guard<std::mutex> lock (caller_mutex_);
  auto t = caller_etcd_->txn ({{k, Compare::Target::kModRevision, s.revision}},
                              {{Op::Kind::kPut, k, render_session (s.record, serving_node, s.site)}});
  if (!t.succeeded)
    return false;
  std::lock_guard<std::mutex> state (mutex_);
  sessions_[s.record.id] = {s.record, serving_node, s.site, t.revision};
  return true;
}

void
ClusterMember::remove_session (const SessionRecord &s)
{
  std::lock_guard<std::mutex> lock (caller_mutex_);
  caller_etcd_->txn (
      {}, {{Op::Kind::kDelete, key ("sessions", s.id)}, {Op::Kind::kDelete, key ("tokens", s.token_sha256)}});
  std::lock_guard<std::mutex> state (mutex_);
  sessions_.erase (s.id);
}

std::optional<SessionRecord>
ClusterMember::session_by_token_sha256 (const std::string &sha256)
{
  {
    std::lock_guard<std::mutex> lock (mutex_);
    for (const auto &[id, s] : sessions_)
      if (s.record.token_sha256 == sha256)
        return s.record;
  }
  std::lock_guard<std::mutex> lock (caller_mutex_);
  auto id = caller_etcd_->get (key ("tokens", sha256));
  if (!id)
    return std::nullopt;
  auto kv = caller_etcd_->get (key ("sessions", id->value));
  auto s = kv ? parse_session (kv->value, kv->mod_revision) : std::nullopt;
  if (!s || s->record.token_sha256 != sha256)
    return std::nullopt;
  return s->record;
}

// ---- annotations of the edge cloud

int64_t
ClusterMember::put_annotation (const orchestrator::AnnotationRecord &a)
{
  const std::string counter = key ("annotation_ids", "");
  std::lock_guard<std::mutex> lock (caller_mutex_);
  // Take the next id and write the annotation in one transaction; another
  // node taking the same id meanwhile makes it fail, and it tries again.
  for (int attempt = 0; attempt < 20; attempt++) {
    auto kv = caller_etcd_->get (counter);
    const int64_t id = (kv ? g_ascii_strtoll (kv->value.c_str (), nullptr, 10) : 0) + 1;
    orchestrator::AnnotationRecord stored = a;
    stored.id = id;
    auto t
        = caller_etcd_->txn ({kv ? Compare{counter, Compare::Target::kModRevision, kv->mod_revision}
                                 : Compare{counter, Compare::Target::kCreateRevision, 0}},
                             {{Op::Kind::kPut, counter, std::to_string (id)},
                              {Op::Kind::kPut, key ("annotations", a.microscope + "/" + std::to_string (id)),
                               render_annotation (stored)}});
    if (t.succeeded)
      return id;
  }
  throw EtcdError ("no annotation id could be taken (too many at once); try again");
}

std::vector<orchestrator::AnnotationRecord>
ClusterMember::annotations (const std::string &microscope)
{
  std::vector<orchestrator::AnnotationRecord> out;
  std::lock_guard<std::mutex> lock (caller_mutex_);
  for (const auto &kv : caller_etcd_->list (key ("annotations", microscope + "/")))
    if (auto a = parse_annotation (kv.value))
      out.push_back (std::move (*a));
  std::sort (out.begin (), out.end (), [] (const auto &x, const auto &y) { return x.id < y.id; });
  return out;
}

bool
ClusterMember::delete_annotation (const std::string &microscope, int64_t id)
{
  const std::string k = key ("annotations", microscope + "/" + std::to_string (id));
  std::lock_guard<std::mutex> lock (caller_mutex_);
  return caller_etcd_->remove (k) > 0;
}

std::vector<ClusterSession>
ClusterMember::sessions () const
{
  std::lock_guard<std::mutex> lock (mutex_);
  std::vector<ClusterSession> out;
  for (const auto &[id, s] : sessions_)
    out.push_back (s);
  return out;
}

void
ClusterMember::publish_relay (const std::string &microscope, const std::string &profile,
                              const RelayEndpoint &at)
{
  int64_t lease;
  {
    std::lock_guard<std::mutex> lock (mutex_);
    lease = view_.joined ? lease_ : 0;
  }
  if (!lease)
    throw EtcdError ("not joined: no lease to publish a relay under");
  std::lock_guard<std::mutex> lock (caller_mutex_);
  caller_etcd_->put (key ("relays", microscope + "/" + profile), render_relay (at), lease);
  std::lock_guard<std::mutex> state (mutex_);
  relays_[microscope + "/" + profile] = at;
}

void
ClusterMember::withdraw_relay (const std::string &microscope, const std::string &profile)
{
  std::lock_guard<std::mutex> lock (caller_mutex_);
  caller_etcd_->remove (key ("relays", microscope + "/" + profile));
  std::lock_guard<std::mutex> state (mutex_);
  relays_.erase (microscope + "/" + profile);
}

std::optional<RelayEndpoint>
ClusterMember::relay (const std::string &microscope, const std::string &profile)
{
  {
    std::lock_guard<std::mutex> lock (mutex_);
    auto it = relays_.find (microscope + "/" + profile);
    if (it != relays_.end ())
      return it->second;
  }
  std::lock_guard<std::mutex> lock (caller_mutex_);
  auto kv = caller_etcd_->get (key ("relays", microscope + "/" + profile));
  if (!kv)
    return std::nullopt;
  Parsed p (kv->value);
  if (!p.root)
    return std::nullopt;
  RelayEndpoint at{p.str ("node"), p.str ("host"), (int)p.integer ("port")};
  std::lock_guard<std::mutex> state (mutex_);
  relays_[microscope + "/" + profile] = at;
  return at;
}

void
ClusterMember::remember (const ClusterSession &s)
{
  std::lock_guard<std::mutex> lock (mutex_);
  sessions_[s.record.id] = s;
}

std::optional<ClusterSession>
ClusterMember::session (const std::string &id)
{
  {
    std::lock_guard<std::mutex> lock (mutex_);
    auto it = sessions_.find (id);
    if (it != sessions_.end ())
      return it->second;
  }
  std::lock_guard<std::mutex> lock (caller_mutex_);
  auto kv = caller_etcd_->get (key ("sessions", id));
  return kv ? parse_session (kv->value, kv->mod_revision) : std::nullopt;
}

std::optional<std::string>
ClusterMember::home_of (const std::string &microscope) const
{
  std::lock_guard<std::mutex> lock (mutex_);
  for (const auto &h : view_.homes)
    if (h.microscope == microscope)
      return h.node;
  return std::nullopt;
}

std::optional<std::string>
ClusterMember::last_home_of (const std::string &microscope) const
{
  std::lock_guard<std::mutex> lock (mutex_);
  auto it = last_homes_.find (microscope);
  if (it == last_homes_.end ())
    return std::nullopt;
  return it->second;
}

std::map<std::string, std::vector<std::string>>
ClusterMember::users () const
{
  std::lock_guard<std::mutex> lock (mutex_);
  return users_;
}

std::optional<NodeInfo>
ClusterMember::node (const std::string &name) const
{
  std::lock_guard<std::mutex> lock (mutex_);
  for (const auto &n : view_.nodes)
    if (n.name == name)
      return n;
  return std::nullopt;
}

// ---- the membership thread

void
ClusterMember::run ()
{
  EtcdClient etcd (config_.etcd);
  const int period_ms = std::max (100, config_.lease_ttl_s * 1000 / 3);
  int64_t last_status_us = 0;
  while (!stopping_) {
    try {
      bool joined;
      {
        std::lock_guard<std::mutex> lock (mutex_);
        joined = view_.joined;
      }
      if (!joined)
        join (etcd);
      bring_users (etcd);
      acquire_homes (etcd);
      publish (etcd);
      read_cluster (etcd);
    } catch (const EtcdError &e) {
      std::lock_guard<std::mutex> lock (mutex_);
      view_.error = e.what ();
      // Unreachable: the lease may lapse without us hearing it; the fences
      // fall at lease_valid_until_us_ by themselves (fence()).
      if (view_.joined && now_us () >= lease_valid_until_us_) {
        g_warning ("edge cloud: lease %" G_GINT64_FORMAT " lapsed while etcd was unreachable", lease_);
        view_.joined = false;
        fences_.clear ();
      }
    }
    if (now_us () - last_status_us > 2 * G_USEC_PER_SEC) {
      auto st = etcd.status ();
      std::lock_guard<std::mutex> lock (mutex_);
      view_.etcd = std::move (st);
      last_status_us = now_us ();
    }
    changed_.notify_all ();
    std::unique_lock<std::mutex> lock (wake_mutex_);
    wake_.wait_for (lock, std::chrono::milliseconds (period_ms), [this] { return stopping_.load (); });
  }
  // Leaving: the lease and with it this node's record and ownerships go now,
  // not after the TTL.
  int64_t lease;
  {
    std::lock_guard<std::mutex> lock (mutex_);
    lease = view_.joined ? lease_ : 0;
    view_.joined = false;
    fences_.clear ();
  }
  if (lease) {
    try {
      etcd.revoke (lease);
    } catch (const EtcdError &e) {
      g_message ("edge cloud: could not revoke lease on leaving (it lapses by itself): %s", e.what ());
    }
  }
}

// The lease is renewed every TTL/3 on a thread and etcd connection of its
// own: reading the edge cloud (several round trips, slow across a WAN) never
// delays a renewal past the TTL.
void
ClusterMember::keep_lease ()
{
  EtcdClient etcd (config_.etcd);
  const int period_ms = std::max (100, config_.lease_ttl_s * 1000 / 3);
  while (!stopping_) {
    int64_t lease = 0;
    {
      std::lock_guard<std::mutex> lock (mutex_);
      lease = view_.joined ? lease_ : 0;
    }
    if (lease) {
      try {
        renew (etcd, lease);
      } catch (const EtcdError &e) {
        std::lock_guard<std::mutex> lock (mutex_);
        view_.error = e.what ();
        // Unreachable: the lease may lapse without us hearing it; the
        // fences fall at lease_valid_until_us_ by themselves (fence()).
        if (view_.joined && lease_ == lease && now_us () >= lease_valid_until_us_) {
          g_warning ("edge cloud: lease %" G_GINT64_FORMAT " lapsed while etcd was unreachable", lease);
          view_.joined = false;
          fences_.clear ();
        }
      }
    }
    std::unique_lock<std::mutex> lock (wake_mutex_);
    wake_.wait_for (lock, std::chrono::milliseconds (period_ms), [this] { return stopping_.load (); });
  }
}

void
ClusterMember::renew (EtcdClient &etcd, int64_t lease)
{
  const int64_t sent = now_us ();
  const int ttl = etcd.keepalive (lease);
  std::lock_guard<std::mutex> lock (mutex_);
  if (lease_ != lease || !view_.joined)
    return; // joined again meanwhile, or leaving
  if (ttl > 0) {
    lease_valid_until_us_ = sent + (int64_t)ttl * G_USEC_PER_SEC;
    return;
  }
  if (stopping_)
    return; // revoked on the way out
  g_warning ("edge cloud: lease %" G_GINT64_FORMAT " expired; joining again", lease);
  view_.joined = false;
  fences_.clear ();
}

void
ClusterMember::join (EtcdClient &etcd)
{
  const int64_t sent = now_us ();
  const auto lease = etcd.grant (config_.lease_ttl_s);
  NodeInfo me;
  {
    std::lock_guard<std::mutex> lock (mutex_);
    me = {config_.node, config_.site, config_.http_url, config_.rtsp_url, config_.capacity_viewers,
          load_,        {},           lease.id};
  }
  const std::string node_key = key ("nodes", config_.node);
  auto t = etcd.txn ({{node_key, Compare::Target::kCreateRevision, 0}},
                     {{Op::Kind::kPut, node_key, node_record_json (me), lease.id}},
                     {{Op::Kind::kRange, node_key}});
  if (!t.succeeded) {
    // Another live process has this name (or this node's previous
    // incarnation, whose lease lapses within the TTL).
    etcd.revoke (lease.id);
    std::lock_guard<std::mutex> lock (mutex_);
    view_.error
        = "node name '" + config_.node + "' is registered by another live process; waiting for its lease";
    return;
  }
  std::lock_guard<std::mutex> lock (mutex_);
  lease_ = lease.id;
  lease_valid_until_us_ = sent + (int64_t)lease.ttl_s * G_USEC_PER_SEC;
  view_.joined = true;
  view_.lease = lease.id;
  view_.error.clear ();
  fences_.clear ();
  users_brought_ = false;
  g_message ("edge cloud: node '%s' joined under lease %" G_GINT64_FORMAT " (TTL %d s)",
             config_.node.c_str (), lease.id, lease.ttl_s);
}

void
ClusterMember::acquire_homes (EtcdClient &etcd)
{
  int64_t lease;
  std::vector<std::string> wanted;
  {
    std::lock_guard<std::mutex> lock (mutex_);
    if (!view_.joined)
      return;
    lease = lease_;
    for (const auto &m : home_microscopes_)
      if (!fences_.count (m))
        wanted.push_back (m);
  }
  std::string problems;
  for (const auto &m : wanted) {
    const std::string k = key ("homes", m);
    auto t = etcd.txn ({{k, Compare::Target::kCreateRevision, 0}}, {{Op::Kind::kPut, k, config_.node, lease}},
                       {{Op::Kind::kRange, k}});
    if (!t.succeeded && !t.ranged.empty () && t.ranged.front ().value == config_.node) {
      // Left by this node's previous incarnation: take it over, as one step.
      const int64_t was = t.ranged.front ().mod_revision;
      t = etcd.txn ({{k, Compare::Target::kModRevision, was}}, {{Op::Kind::kPut, k, config_.node, lease}});
    }
    if (t.succeeded)
      etcd.put (key ("microscopes", m), config_.node); // kept while this node is away
    std::lock_guard<std::mutex> lock (mutex_);
    if (t.succeeded) {
      fences_[m] = {m, lease, t.revision};
      g_message ("edge cloud: this node is the home of microscope '%s' (fencing revision %" G_GINT64_FORMAT
                 ")",
                 m.c_str (), t.revision);
    } else {
      const std::string owner = t.ranged.empty () ? "?" : t.ranged.front ().value;
      problems += (problems.empty () ? "" : "; ") + std::string ("microscope '") + m + "' is homed on node '"
                  + owner + "'";
    }
  }
  if (!problems.empty ()) {
    std::lock_guard<std::mutex> lock (mutex_);
    view_.error = problems;
  }
}

void
ClusterMember::publish (EtcdClient &etcd)
{
  NodeInfo me;
  int64_t lease;
  {
    std::lock_guard<std::mutex> lock (mutex_);
    if (!view_.joined)
      return;
    lease = lease_;
    me = {config_.node, config_.site, config_.http_url, config_.rtsp_url, config_.capacity_viewers, load_,
          {},           lease};
    for (const auto &[m, f] : fences_)
      me.microscopes.push_back (m);
  }
  etcd.put (key ("nodes", config_.node), node_record_json (me), lease);
}

// Once per join: each configured user the edge cloud does not have yet is
// written (create-only, so the first node to bring a name decides its
// roles); one it has with other roles is said in the log.
void
ClusterMember::bring_users (EtcdClient &etcd)
{
  {
    std::lock_guard<std::mutex> lock (mutex_);
    if (users_brought_ || !view_.joined)
      return;
  }
  for (const auto &[name, roles] : config_.users) {
    const std::string k = key ("users", name);
    auto t = etcd.txn ({{k, Compare::Target::kCreateRevision, 0}},
                       {{Op::Kind::kPut, k, render_user (name, roles)}}, {{Op::Kind::kRange, k}});
    if (t.succeeded || t.ranged.empty ())
      continue;
    auto theirs = parse_user_roles (t.ranged[0].value);
    if (!theirs || *theirs != roles)
      g_warning ("edge cloud: user '%s' is in the edge cloud with other roles than this node's configuration "
                 "gives; the edge cloud's count",
                 name.c_str ());
  }
  std::lock_guard<std::mutex> lock (mutex_);
  users_brought_ = true;
}

void
ClusterMember::read_cluster (EtcdClient &etcd)
{
  std::vector<NodeInfo> nodes;
  for (const auto &kv : etcd.list (config_.prefix + "nodes/"))
    if (auto n = parse_node (kv))
      nodes.push_back (std::move (*n));
  std::vector<Home> homes;
  const std::string homes_prefix = config_.prefix + "homes/";
  for (const auto &kv : etcd.list (homes_prefix))
    homes.push_back ({kv.key.substr (homes_prefix.size ()), kv.value, kv.mod_revision, kv.lease});
  std::map<std::string, std::string> last_homes;
  const std::string microscopes_prefix = config_.prefix + "microscopes/";
  for (const auto &kv : etcd.list (microscopes_prefix))
    last_homes[kv.key.substr (microscopes_prefix.size ())] = kv.value;
  std::map<std::string, ClusterSession> sessions;
  int64_t sessions_read_at = 0;
  for (const auto &kv : etcd.list (config_.prefix + "sessions/", &sessions_read_at))
    if (auto s = parse_session (kv.value, kv.mod_revision))
      sessions[s->record.id] = std::move (*s);
  std::map<std::string, RelayEndpoint> relays;
  const std::string relays_prefix = config_.prefix + "relays/";
  for (const auto &kv : etcd.list (relays_prefix)) {
    Parsed p (kv.value);
    if (p.root)
      relays[kv.key.substr (relays_prefix.size ())]
          = {p.str ("node"), p.str ("host"), (int)p.integer ("port")};
  }

  std::map<std::string, std::vector<std::string>> users;
  const std::string users_prefix = config_.prefix + "users/";
  for (const auto &kv : etcd.list (users_prefix))
    if (auto roles = parse_user_roles (kv.value))
      users[kv.key.substr (users_prefix.size ())] = std::move (*roles);

  std::lock_guard<std::mutex> lock (mutex_);
  view_.nodes = std::move (nodes);
  view_.homes = homes;
  users_ = std::move (users);
  // A session remembered while this read was on its way is newer than it:
  // kept, not taken for ended.
  for (auto &[id, known] : sessions_)
    if (known.revision > sessions_read_at && !sessions.count (id))
      sessions[id] = std::move (known);
  sessions_ = std::move (sessions);
  last_homes_ = std::move (last_homes);
  relays_ = std::move (relays);
  // An ownership that etcd no longer shows as this lease's, at this revision,
  // is gone: taken again on the next round (a new fencing token).
  for (auto it = fences_.begin (); it != fences_.end ();) {
    auto h = std::find_if (homes.begin (), homes.end (),
                           [&] (const Home &x) { return x.microscope == it->first; });
    const bool held = h != homes.end () && h->node == config_.node && h->lease == it->second.lease
                      && h->revision == it->second.revision;
    it = held ? std::next (it) : fences_.erase (it);
  }
}

} // namespace livemicro::cluster
