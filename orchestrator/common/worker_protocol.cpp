#include "worker_protocol.h"

#include "json_writer.h"

#include <json-glib/json-glib.h>
#include <livemicro/json_text.h>

#include <cmath>
#include <cstring>
#include <memory>

namespace livemicro::orchestrator {

namespace {

constexpr struct {
  CommandOp op;
  const char *name;
} kOps[] = {{CommandOp::kMove, "move"},           {CommandOp::kMoveBy, "move_by"},
            {CommandOp::kFocus, "focus"},         {CommandOp::kFocusBy, "focus_by"},
            {CommandOp::kObjective, "objective"}, {CommandOp::kJog, "jog"},
            {CommandOp::kAutofocus, "autofocus"}, {CommandOp::kStop, "stop"}};

// ---- writing -------------------------------------------------------------------

// Members into an open JSON object of a builder (chained: each returns the
// writer it was called on).
template <typename Self> class MemberWriter {
public:
  explicit MemberWriter (JsonBuilder *b) : b_ (b) {}
  Self &str (const char *k, const std::string &v)
  {
    json_builder_set_member_name (b_, k);
    json_builder_add_string_value (b_, v.c_str ());
    return self ();
  }
  Self &num (const char *k, double v)
  {
    json_builder_set_member_name (b_, k);
    add_number (b_, v);
    return self ();
  }
  Self &integer (const char *k, int64_t v)
  {
    json_builder_set_member_name (b_, k);
    json_builder_add_int_value (b_, v);
    return self ();
  }
  Self &boolean (const char *k, bool v)
  {
    json_builder_set_member_name (b_, k);
    json_builder_add_boolean_value (b_, v);
    return self ();
  }
  template <typename T> Self &opt (const char *k, const std::optional<T> &v)
  {
    if (v) {
      if constexpr (std::is_same_v<T, std::string>)
        str (k, *v);
      else if constexpr (std::is_floating_point_v<T>)
        num (k, *v);
      else
        integer (k, (int64_t)*v);
    }
    return self ();
  }
  JsonBuilder *builder () { return b_; }

protected:
  Self &self () { return static_cast<Self &> (*this); }
  JsonBuilder *b_;
};

class Members : public MemberWriter<Members> {
public:
  using MemberWriter::MemberWriter;
};

// One message: an object whose first member names its kind.
class Writer : public MemberWriter<Writer> {
public:
  Writer (const char *kind_member, const char *kind) : MemberWriter (json_builder_new ())
  {
    json_builder_begin_object (b_);
    str (kind_member, kind);
  }
  ~Writer () { g_object_unref (b_); }
  std::string done ()
  {
    json_builder_end_object (b_);
    return json_text (b_);
  }
};

// ---- reading: every member checked for its type ----------------------------------

class Reader {
public:
  explicit Reader (JsonObject *o) : o_ (o) {}
  bool ok () const { return ok_; }
  JsonNode *node (const char *k) const
  {
    return o_ && json_object_has_member (o_, k) ? json_object_get_member (o_, k) : nullptr;
  }
  bool has (const char *k) const { return node (k) != nullptr; }
  std::string str (const char *k, bool required = true)
  {
    JsonNode *n = node (k);
    if (n && JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_STRING)
      return json_node_get_string (n) ? json_node_get_string (n) : "";
    ok_ = ok_ && !required && !n;
    return "";
  }
  double num (const char *k, bool required = true)
  {
    JsonNode *n = node (k);
    if (n && JSON_NODE_HOLDS_VALUE (n)
        && (json_node_get_value_type (n) == G_TYPE_DOUBLE || json_node_get_value_type (n) == G_TYPE_INT64))
      return json_node_get_double (n);
    if (n && JSON_NODE_HOLDS_NULL (n))
      return NAN; // written for a non-finite number
    ok_ = ok_ && !required && !n;
    return 0;
  }
  int64_t integer (const char *k, bool required = true)
  {
    JsonNode *n = node (k);
    if (n && JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_INT64)
      return json_node_get_int (n);
    ok_ = ok_ && !required && !n;
    return 0;
  }
  bool boolean (const char *k, bool required = true)
  {
    JsonNode *n = node (k);
    if (n && JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_BOOLEAN)
      return json_node_get_boolean (n);
    ok_ = ok_ && !required && !n;
    return false;
  }
  template <typename T> std::optional<T> opt (const char *k)
  {
    if (!has (k))
      return std::nullopt;
    if constexpr (std::is_same_v<T, std::string>)
      return str (k);
    else if constexpr (std::is_floating_point_v<T>)
      return num (k);
    else
      return (T)integer (k);
  }
  JsonArray *array (const char *k, bool required = true)
  {
    JsonNode *n = node (k);
    if (n && JSON_NODE_HOLDS_ARRAY (n))
      return json_node_get_array (n);
    ok_ = ok_ && !required && !n;
    return nullptr;
  }
  JsonObject *object (const char *k, bool required = true)
  {
    JsonNode *n = node (k);
    if (n && JSON_NODE_HOLDS_OBJECT (n))
      return json_node_get_object (n);
    ok_ = ok_ && !required && !n;
    return nullptr;
  }
  void fail () { ok_ = false; }

private:
  JsonObject *o_;
  bool ok_ = true;
};

std::shared_ptr<JsonParser>
parse (const std::string &json, JsonObject **root)
{
  std::shared_ptr<JsonParser> p (json_parser_new (), g_object_unref);
  *root = nullptr;
  if (livemicro::json::text_problem (json, 16))
    return p; // json-glib would misread or leak it
  if (json_parser_load_from_data (p.get (), json.data (), (gssize)json.size (), nullptr)) {
    JsonNode *r = json_parser_get_root (p.get ());
    if (r && JSON_NODE_HOLDS_OBJECT (r))
      *root = json_node_get_object (r);
  }
  return p;
}

bool
read_status (Reader &r, MicroscopeStatus &s)
{
  Reader stage (r.object ("stage"));
  s.x_um = stage.num ("x_um");
  s.y_um = stage.num ("y_um");
  s.z_um = stage.num ("z_um");
  s.objective = (int)r.integer ("objective");
  s.um_per_px = r.num ("um_per_px");
  s.moving = r.boolean ("moving");
  s.stage_speed_um_s = r.num ("stage_speed_um_s", false);
  if (JsonArray *mags = r.array ("objectives", false))
    for (guint i = 0; i < json_array_get_length (mags); i++) {
      JsonNode *n = json_array_get_element (mags, i);
      if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_INT64)
        return false;
      s.objectives.push_back ((int)json_node_get_int (n));
    }
  if (JsonObject *lim = r.object ("limits", false)) {
    Reader l (lim);
    SoftLimits sl;
    sl.x = {l.num ("x_min_um"), l.num ("x_max_um")};
    sl.y = {l.num ("y_min_um"), l.num ("y_max_um")};
    sl.z = {l.num ("z_min_um"), l.num ("z_max_um")};
    if (!l.ok ())
      return false;
    s.limits = sl;
  }
  return stage.ok () && r.ok ();
}

bool
read_field (JsonObject *o, AnalysedField &f)
{
  Reader r (o);
  f.analysed_pts = (uint64_t)r.integer ("analysed_pts");
  f.x_um = r.num ("x_um");
  f.y_um = r.num ("y_um");
  f.width_um = r.num ("width_um");
  f.height_um = r.num ("height_um");
  f.um_per_px = r.num ("um_per_px");
  JsonArray *list = r.array ("nuclei");
  for (guint i = 0; list && i < json_array_get_length (list); i++) {
    JsonNode *n = json_array_get_element (list, i);
    if (!JSON_NODE_HOLDS_OBJECT (n))
      return false;
    Reader m (json_node_get_object (n));
    NucleusOutline o;
    o.x_um = m.num ("x_um");
    o.y_um = m.num ("y_um");
    o.area_um2 = m.num ("area_um2");
    o.mitotic_candidate = m.boolean ("mitotic_candidate");
    JsonArray *pts = m.array ("outline_um");
    for (guint k = 0; pts && k < json_array_get_length (pts); k++) {
      JsonNode *v = json_array_get_element (pts, k);
      if (!JSON_NODE_HOLDS_VALUE (v)
          || (json_node_get_value_type (v) != G_TYPE_DOUBLE && json_node_get_value_type (v) != G_TYPE_INT64))
        return false;
      o.outline_um.push_back (json_node_get_double (v));
    }
    if (!m.ok () || o.outline_um.size () % 2)
      return false;
    f.nuclei.push_back (std::move (o));
  }
  return r.ok ();
}

bool
read_summary (JsonObject *o, AnalysisSummary &a)
{
  Reader r (o);
  a.analysed = r.boolean ("analysed");
  a.quality = r.str ("quality");
  a.frames_analysed = (uint64_t)r.integer ("frames_analysed", false);
  a.frames_skipped = (uint64_t)r.integer ("frames_skipped", false);
  a.frame_width = (uint32_t)r.integer ("frame_width", false);
  a.frame_height = (uint32_t)r.integer ("frame_height", false);
  a.um_per_px = r.num ("um_per_px", false);
  a.working_um_per_px = r.num ("working_um_per_px", false);
  a.stain = r.str ("stain", false);
  a.tissue_fraction = r.num ("tissue_fraction", false);
  a.tissue_area_mm2 = r.num ("tissue_area_mm2", false);
  a.mean_h_od = r.num ("mean_h_od", false);
  a.mean_e_od = r.num ("mean_e_od", false);
  a.focus = r.num ("focus", false);
  a.dab_fraction = r.num ("dab_fraction", false);
  a.analysis_ms = r.num ("analysis_ms", false);
  a.analysed_pts = r.opt<uint64_t> ("analysed_pts");
  a.he_ratio = r.opt<double> ("he_ratio");
  a.nuclei_count = r.opt<uint32_t> ("nuclei_count");
  a.mitotic_candidates = r.opt<uint32_t> ("mitotic_candidates");
  a.pleomorphism = r.opt<uint32_t> ("pleomorphism");
  a.nuclei_per_mm2 = r.opt<double> ("nuclei_per_mm2");
  a.mean_area_um2 = r.opt<double> ("mean_area_um2");
  a.cv_area = r.opt<double> ("cv_area");
  a.mean_circularity = r.opt<double> ("mean_circularity");
  a.cv_h_od = r.opt<double> ("cv_h_od");
  a.size_ratio = r.opt<double> ("size_ratio");
  a.mitotic_candidates_per_mm2 = r.opt<double> ("mitotic_candidates_per_mm2");
  a.grade_cue = r.opt<std::string> ("grade_cue");
  a.grade_cue_note = r.opt<std::string> ("grade_cue_note");
  return r.ok ();
}

} // namespace

void
add_number (JsonBuilder *b, double v)
{
  if (!std::isfinite (v))
    json_builder_add_null_value (b);           // JSON has no NaN
  else if (std::fabs (v) < 9007199254740992.0) // 2^53: json-glib writes these correctly
    json_builder_add_double_value (b, v);
  else if (std::fabs (v) < 9.2e18)
    json_builder_add_int_value (b, (gint64)v); // integral at this size
  else
    json_builder_add_null_value (b);
}

void
add_status_members (JsonBuilder *b, const MicroscopeStatus &s)
{
  json_builder_set_member_name (b, "stage");
  json_builder_begin_object (b);
  Members (b).num ("x_um", s.x_um).num ("y_um", s.y_um).num ("z_um", s.z_um);
  json_builder_end_object (b);
  Members (b)
      .integer ("objective", s.objective)
      .num ("um_per_px", s.um_per_px)
      .boolean ("moving", s.moving)
      .num ("stage_speed_um_s", s.stage_speed_um_s);
  json_builder_set_member_name (b, "objectives");
  json_builder_begin_array (b);
  for (int m : s.objectives)
    json_builder_add_int_value (b, m);
  json_builder_end_array (b);
  if (s.limits) {
    json_builder_set_member_name (b, "limits");
    json_builder_begin_object (b);
    add_limits_members (b, *s.limits);
    json_builder_end_object (b);
  }
}

void
add_limits_members (JsonBuilder *b, const SoftLimits &l)
{
  Members (b)
      .num ("x_min_um", l.x.min_um)
      .num ("x_max_um", l.x.max_um)
      .num ("y_min_um", l.y.min_um)
      .num ("y_max_um", l.y.max_um)
      .num ("z_min_um", l.z.min_um)
      .num ("z_max_um", l.z.max_um);
}

namespace {

struct PackedFieldHead {
  uint64_t analysed_pts;
  double x_um, y_um, width_um, height_um, um_per_px;
  uint64_t nuclei;
};
struct PackedNucleusHead {
  double x_um, y_um, area_um2;
  uint32_t mitotic_candidate;
  uint32_t outline_values; // then as many doubles: x0, y0, x1, y1, …
};

} // namespace

std::vector<uint8_t>
pack_field (const AnalysedField &f)
{
  size_t bytes = sizeof (PackedFieldHead);
  for (const NucleusOutline &n : f.nuclei)
    bytes += sizeof (PackedNucleusHead) + n.outline_um.size () * sizeof (double);
  std::vector<uint8_t> out (bytes);
  uint8_t *at = out.data ();
  const PackedFieldHead head{f.analysed_pts, f.x_um,      f.y_um,          f.width_um,
                             f.height_um,    f.um_per_px, f.nuclei.size ()};
  std::memcpy (at, &head, sizeof head);
  at += sizeof head;
  for (const NucleusOutline &n : f.nuclei) {
    const PackedNucleusHead nh{n.x_um, n.y_um, n.area_um2, n.mitotic_candidate ? 1u : 0u,
                               (uint32_t)n.outline_um.size ()};
    std::memcpy (at, &nh, sizeof nh);
    at += sizeof nh;
    if (!n.outline_um.empty ())
      std::memcpy (at, n.outline_um.data (), n.outline_um.size () * sizeof (double));
    at += n.outline_um.size () * sizeof (double);
  }
  return out;
}

std::optional<AnalysedField>
unpack_field (const uint8_t *data, size_t len)
{
  PackedFieldHead head;
  if (!data || len < sizeof head)
    return std::nullopt;
  std::memcpy (&head, data, sizeof head);
  size_t at = sizeof head;
  // Each nucleus takes at least its head: a count beyond that is a lie.
  if (head.nuclei > (len - at) / sizeof (PackedNucleusHead))
    return std::nullopt;
  for (double v : {head.x_um, head.y_um, head.width_um, head.height_um, head.um_per_px})
    if (!std::isfinite (v))
      return std::nullopt;
  AnalysedField f;
  f.analysed_pts = head.analysed_pts;
  f.x_um = head.x_um;
  f.y_um = head.y_um;
  f.width_um = head.width_um;
  f.height_um = head.height_um;
  f.um_per_px = head.um_per_px;
  f.nuclei.resize (head.nuclei);
  for (NucleusOutline &n : f.nuclei) {
    PackedNucleusHead nh;
    if (len - at < sizeof nh)
      return std::nullopt;
    std::memcpy (&nh, data + at, sizeof nh);
    at += sizeof nh;
    if (nh.mitotic_candidate > 1 || nh.outline_values % 2 || nh.outline_values > (len - at) / sizeof (double))
      return std::nullopt;
    n.x_um = nh.x_um;
    n.y_um = nh.y_um;
    n.area_um2 = nh.area_um2;
    n.mitotic_candidate = nh.mitotic_candidate == 1;
    n.outline_um.resize (nh.outline_values);
    if (nh.outline_values)
      std::memcpy (n.outline_um.data (), data + at, nh.outline_values * sizeof (double));
    at += nh.outline_values * sizeof (double);
    if (!std::isfinite (n.x_um) || !std::isfinite (n.y_um) || !std::isfinite (n.area_um2))
      return std::nullopt;
    for (double v : n.outline_um)
      if (!std::isfinite (v))
        return std::nullopt;
  }
  if (at != len)
    return std::nullopt;
  return f;
}

std::string
field_json (const AnalysedField &f)
{
  std::string out;
  // ~12 outline points a nucleus, ~10 characters a number.
  size_t points = 0;
  for (const NucleusOutline &n : f.nuclei)
    points += n.outline_um.size ();
  out.reserve (200 + f.nuclei.size () * 110 + points * 10);
  auto member = [&out] (const char *name, double v) {
    out += '"';
    out += name;
    out += "\":";
    append_json_number (out, v);
  };
  out += "{\"analysed_pts\":";
  out += std::to_string (f.analysed_pts);
  for (auto [name, v] : {std::pair<const char *, double>{"x_um", f.x_um},
                         {"y_um", f.y_um},
                         {"width_um", f.width_um},
                         {"height_um", f.height_um},
                         {"um_per_px", f.um_per_px}}) {
    out += ',';
    member (name, v);
  }
  out += ",\"nuclei\":[";
  for (size_t i = 0; i < f.nuclei.size (); i++) {
    const NucleusOutline &n = f.nuclei[i];
    out += i ? ",{" : "{";
    member ("x_um", n.x_um);
    out += ',';
    member ("y_um", n.y_um);
    out += ',';
    member ("area_um2", n.area_um2);
    out += n.mitotic_candidate ? ",\"mitotic_candidate\":true" : ",\"mitotic_candidate\":false";
    out += ",\"outline_um\":[";
    for (size_t k = 0; k < n.outline_um.size (); k++) {
      if (k)
        out += ',';
      append_json_number (out, n.outline_um[k]);
    }
    out += "]}";
  }
  out += "]}";
  return out;
}

void
add_summary_members (JsonBuilder *b, const AnalysisSummary &a)
{
  Members m (b);
  m.boolean ("analysed", a.analysed).str ("quality", a.quality);
  m.integer ("frames_analysed", (int64_t)a.frames_analysed)
      .integer ("frames_skipped", (int64_t)a.frames_skipped);
  m.integer ("frame_width", a.frame_width).integer ("frame_height", a.frame_height);
  m.num ("um_per_px", a.um_per_px).num ("working_um_per_px", a.working_um_per_px).str ("stain", a.stain);
  m.num ("tissue_fraction", a.tissue_fraction).num ("tissue_area_mm2", a.tissue_area_mm2);
  m.num ("mean_h_od", a.mean_h_od).num ("mean_e_od", a.mean_e_od).num ("focus", a.focus);
  m.num ("dab_fraction", a.dab_fraction).num ("analysis_ms", a.analysis_ms);
  m.opt ("analysed_pts", a.analysed_pts).opt ("he_ratio", a.he_ratio);
  m.opt ("nuclei_count", a.nuclei_count).opt ("mitotic_candidates", a.mitotic_candidates);
  m.opt ("pleomorphism", a.pleomorphism).opt ("nuclei_per_mm2", a.nuclei_per_mm2);
  m.opt ("mean_area_um2", a.mean_area_um2).opt ("cv_area", a.cv_area);
  m.opt ("mean_circularity", a.mean_circularity).opt ("cv_h_od", a.cv_h_od);
  m.opt ("size_ratio", a.size_ratio).opt ("mitotic_candidates_per_mm2", a.mitotic_candidates_per_mm2);
  m.opt ("grade_cue", a.grade_cue).opt ("grade_cue_note", a.grade_cue_note);
}

const char *
command_op_name (CommandOp op)
{
  for (const auto &o : kOps)
    if (o.op == op)
      return o.name;
  return "?";
}

std::optional<CommandOp>
command_op_from_name (const std::string &name)
{
  for (const auto &o : kOps)
    if (name == o.name)
      return o.op;
  return std::nullopt;
}

// ---- commands --------------------------------------------------------------------

std::string
encode (const WorkerCommand &c)
{
  return std::visit (
      [] (const auto &m) -> std::string {
        using T = std::decay_t<decltype (m)>;
        if constexpr (std::is_same_v<T, command::Start>)
          return Writer ("cmd", "start").str ("capture", m.capture).done ();
        else if constexpr (std::is_same_v<T, command::AddView>)
          return Writer ("cmd", "add_view")
              .integer ("view", m.view)
              .str ("description", m.description)
              .done ();
        else if constexpr (std::is_same_v<T, command::RemoveView>)
          return Writer ("cmd", "remove_view").integer ("view", m.view).done ();
        else if constexpr (std::is_same_v<T, command::Keyframe>)
          return Writer ("cmd", "keyframe").integer ("view", m.view).done ();
        else if constexpr (std::is_same_v<T, command::Still>)
          return Writer ("cmd", "still").integer ("view", m.view).integer ("request", m.request).done ();
        else if constexpr (std::is_same_v<T, command::Demand>) {
          Writer w ("cmd", "demand");
          json_builder_set_member_name (w.builder (), "playing");
          json_builder_begin_array (w.builder ());
          for (uint32_t v : m.playing)
            json_builder_add_int_value (w.builder (), v);
          json_builder_end_array (w.builder ());
          return w.boolean ("analysis", m.analysis).done ();
        } else if constexpr (std::is_same_v<T, command::Hardware>)
          return Writer ("cmd", "hw")
              .integer ("id", (int64_t)m.id)
              .str ("op", command_op_name (m.op))
              .num ("a", m.a)
              .num ("b", m.b)
              .integer ("objective", m.objective)
              .done ();
        else
          return Writer ("cmd", "quit").done ();
      },
      c);
}

std::optional<WorkerCommand>
decode_command (const std::string &json)
{
  JsonObject *o = nullptr;
  auto keep = parse (json, &o);
  if (!o)
    return std::nullopt;
  Reader r (o);
  const std::string cmd = r.str ("cmd");
  std::optional<WorkerCommand> c;
  if (cmd == "start")
    c = command::Start{r.str ("capture")};
  else if (cmd == "add_view")
    c = command::AddView{(uint32_t)r.integer ("view"), r.str ("description")};
  else if (cmd == "remove_view")
    c = command::RemoveView{(uint32_t)r.integer ("view")};
  else if (cmd == "keyframe")
    c = command::Keyframe{(uint32_t)r.integer ("view")};
  else if (cmd == "still")
    c = command::Still{(uint32_t)r.integer ("view"), r.integer ("request")};
  else if (cmd == "hw") {
    auto op = command_op_from_name (r.str ("op"));
    if (!op)
      return std::nullopt;
    c = command::Hardware{(uint64_t)r.integer ("id"), *op, r.num ("a"), r.num ("b"),
                          (int)r.integer ("objective")};
  } else if (cmd == "demand") {
    command::Demand d;
    JsonArray *playing = r.array ("playing");
    for (guint i = 0; playing && i < json_array_get_length (playing); i++) {
      JsonNode *n = json_array_get_element (playing, i);
      if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_INT64)
        return std::nullopt;
      d.playing.push_back ((uint32_t)json_node_get_int (n));
    }
    d.analysis = r.boolean ("analysis");
    c = d;
  } else if (cmd == "quit")
    c = command::Quit{};
  if (!c || !r.ok ())
    return std::nullopt;
  return c;
}

// ---- events ------------------------------------------------------------------------

namespace {

std::string
encode_stats (const event::Stats &m)
{
  Writer w ("event", "stats");
  JsonBuilder *b = w.builder ();
  json_builder_set_member_name (b, "views");
  json_builder_begin_array (b);
  for (const auto &v : m.views) {
    json_builder_begin_object (b);
    for (auto [k, n] : {std::pair<const char *, uint64_t>{"view", v.view},
                        {"frames", v.frames},
                        {"dropped", v.dropped},
                        {"bytes", v.bytes}}) {
      json_builder_set_member_name (b, k);
      json_builder_add_int_value (b, (gint64)n);
    }
    json_builder_set_member_name (b, "fps");
    json_builder_add_double_value (b, v.fps);
    json_builder_set_member_name (b, "encoding");
    json_builder_add_boolean_value (b, v.encoding);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  return w.num ("analysis_ms_mean", m.analysis_ms_mean)
      .integer ("analysis_count", (int64_t)m.analysis_count)
      .integer ("capture_frames", (int64_t)m.capture_frames)
      .boolean ("capture_active", m.capture_active)
      .boolean ("analysis_active", m.analysis_active)
      .done ();
}

std::string
encode_still (const event::StillTaken &m)
{
  Writer w ("event", "still");
  w.integer ("request", m.request);
  if (!m.error.empty ())
    return w.str ("error", m.error).done ();
  return w.str ("png_base64", m.png_base64).integer ("width", m.width).integer ("height", m.height).done ();
}

bool
read_stats (Reader &r, event::Stats &s)
{
  JsonArray *views = r.array ("views");
  for (guint i = 0; views && i < json_array_get_length (views); i++) {
    JsonNode *n = json_array_get_element (views, i);
    if (!JSON_NODE_HOLDS_OBJECT (n))
      return false;
    Reader v (json_node_get_object (n));
    s.views.push_back ({(uint32_t)v.integer ("view"), (uint64_t)v.integer ("frames"),
                        (uint64_t)v.integer ("dropped"), (uint64_t)v.integer ("bytes"), v.num ("fps"),
                        v.boolean ("encoding", false)});
    if (!v.ok ())
      return false;
  }
  s.analysis_ms_mean = r.num ("analysis_ms_mean", false);
  s.analysis_count = (uint64_t)r.integer ("analysis_count", false);
  s.capture_frames = (uint64_t)r.integer ("capture_frames", false);
  s.capture_active = r.boolean ("capture_active", false);
  s.analysis_active = r.boolean ("analysis_active", false);
  return true;
}

event::StillTaken
read_still (Reader &r)
{
  event::StillTaken s;
  s.request = r.integer ("request");
  s.error = r.str ("error", false);
  s.png_base64 = r.str ("png_base64", false);
  s.width = (uint32_t)r.integer ("width", false);
  s.height = (uint32_t)r.integer ("height", false);
  if (s.error.empty () && s.png_base64.empty ())
    s.error = "the worker sent no image";
  return s;
}

SlideOverview
read_overview (Reader &r)
{
  SlideOverview o;
  o.x_um = r.num ("x_um");
  o.y_um = r.num ("y_um");
  o.width_um = r.num ("width_um");
  o.height_um = r.num ("height_um");
  o.width = (uint32_t)r.integer ("width");
  o.height = (uint32_t)r.integer ("height");
  o.macro = r.boolean ("macro", false);
  o.png_base64 = r.str ("png_base64");
  return o;
}

} // namespace

std::string
encode (const WorkerEvent &e)
{
  return std::visit (
      [] (const auto &m) -> std::string {
        using T = std::decay_t<decltype (m)>;
        if constexpr (std::is_same_v<T, event::Hello>)
          return Writer ("event", "hello").integer ("pid", m.pid).done ();
        else if constexpr (std::is_same_v<T, event::Started>)
          return Writer ("event", "started").done ();
        else if constexpr (std::is_same_v<T, event::State>) {
          Writer w ("event", "state");
          add_status_members (w.builder (), m.status);
          return w.done ();
        } else if constexpr (std::is_same_v<T, event::Features>) {
          Writer w ("event", "features");
          json_builder_set_member_name (w.builder (), "summary");
          json_builder_begin_object (w.builder ());
          add_summary_members (w.builder (), m.summary);
          json_builder_end_object (w.builder ());
          return w.done ();
        } else if constexpr (std::is_same_v<T, event::Stats>)
          return encode_stats (m);
        else if constexpr (std::is_same_v<T, event::ViewAdded>)
          return Writer ("event", "view_added").integer ("view", m.view).done ();
        else if constexpr (std::is_same_v<T, event::ViewError>)
          return Writer ("event", "view_error").integer ("view", m.view).str ("message", m.message).done ();
        else if constexpr (std::is_same_v<T, event::CommandEnded>)
          return Writer ("event", "command")
              .integer ("id", (int64_t)m.id)
              .str ("op", m.op)
              .str ("status", m.status)
              .str ("detail", m.detail)
              .done ();
        else if constexpr (std::is_same_v<T, event::StillTaken>)
          return encode_still (m);
        else if constexpr (std::is_same_v<T, event::Warning>)
          return Writer ("event", "warning").str ("source", m.source).str ("message", m.message).done ();
        else if constexpr (std::is_same_v<T, event::Device>)
          return Writer ("event", "device")
              .str ("part", m.part)
              .str ("device", m.device)
              .str ("problem", m.problem)
              .boolean ("online", m.online)
              .done ();
        else if constexpr (std::is_same_v<T, event::Nuclei>)
          return "{\"event\":\"nuclei\",\"field\":" + field_json (m.field) + "}";
        else if constexpr (std::is_same_v<T, event::Overview>)
          return Writer ("event", "overview")
              .num ("x_um", m.overview.x_um)
              .num ("y_um", m.overview.y_um)
              .num ("width_um", m.overview.width_um)
              .num ("height_um", m.overview.height_um)
              .integer ("width", m.overview.width)
              .integer ("height", m.overview.height)
              .boolean ("macro", m.overview.macro)
              .str ("png_base64", m.overview.png_base64)
              .done ();
        else
          return Writer ("event", "error").str ("message", m.message).done ();
      },
      e);
}

std::optional<WorkerEvent>
decode_event (const std::string &json)
{
  JsonObject *o = nullptr;
  auto keep = parse (json, &o);
  if (!o)
    return std::nullopt;
  Reader r (o);
  const std::string name = r.str ("event");
  std::optional<WorkerEvent> e;
  if (name == "hello")
    e = event::Hello{(int)r.integer ("pid", false)};
  else if (name == "started")
    e = event::Started{};
  else if (name == "state") {
    event::State s;
    if (!read_status (r, s.status))
      return std::nullopt;
    e = s;
  } else if (name == "features") {
    event::Features f;
    JsonObject *summary = r.object ("summary");
    if (!summary || !read_summary (summary, f.summary))
      return std::nullopt;
    e = f;
  } else if (name == "stats") {
    event::Stats s;
    if (!read_stats (r, s))
      return std::nullopt;
    e = s;
  } else if (name == "view_added")
    e = event::ViewAdded{(uint32_t)r.integer ("view")};
  else if (name == "view_error")
    e = event::ViewError{(uint32_t)r.integer ("view"), r.str ("message")};
  else if (name == "command")
    e = event::CommandEnded{(uint64_t)r.integer ("id"), r.str ("op"), r.str ("status"),
                            r.str ("detail", false)};
  else if (name == "still")
    e = read_still (r);
  else if (name == "warning")
    e = event::Warning{r.str ("source", false), r.str ("message", false)};
  else if (name == "device")
    e = event::Device{r.str ("part", false), r.str ("device", false), r.str ("problem", false),
                      r.boolean ("online", false) || !r.has ("online")};
  else if (name == "error")
    e = event::Failed{r.str ("message", false)};
  else if (name == "nuclei") {
    event::Nuclei n;
    JsonObject *field = r.object ("field");
    if (!field || !read_field (field, n.field))
      return std::nullopt;
    e = n;
  } else if (name == "overview")
    e = event::Overview{read_overview (r)};
  if (!e || !r.ok ())
    return std::nullopt;
  return e;
}

} // namespace livemicro::orchestrator
