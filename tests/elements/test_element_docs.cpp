// docs/elements.md against the real registry: every property of every
// livemicro element is in that element's table with its type, range, default
// and writability as the element declares them, and the table lists nothing
// the element does not have.  The property tables are what users read
// instead of gst-inspect-1.0; this test keeps them from drifting.
//
// The table format (one table per "## `element`" section, the first whose
// header starts with "property"):
//   | property | type | range | default | meaning |
// - property: one or more `name`s, comma-separated (they then share the row);
// - type: bool, int, uint, int64, uint64, double, float, string, enum, flags,
//   or the GType name of a boxed or object value; ", read-only" when the
//   property cannot be written;
// - range: numbers "MIN … MAX" ("max" = the type's largest value); enums: the
//   nicks, comma-separated, each in backticks; anything else: empty or "—";
// - default: the value (numbers, true/false, NULL, an enum nick, a string in
//   backticks), optionally followed by a remark in parentheses; "—" for a
//   boxed or object value.
// Inherited properties (GstBaseSrc's num-buffers, ...) need not be listed; when
// they are, their row is checked the same way.
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#ifndef LIVEMICRO_SOURCE_DIR
#error "LIVEMICRO_SOURCE_DIR must name the source tree"
#endif

namespace {

const char *kDoc = "docs/elements.md";

struct Row {
  int line = 0;
  std::string type, range, def;
};

struct Table {
  int line = 0; // of the header
  std::map<std::string, Row> rows;
  std::vector<std::string> problems; // malformed rows
};

std::string
trim (const std::string &s)
{
  size_t b = s.find_first_not_of (" \t");
  size_t e = s.find_last_not_of (" \t");
  return b == std::string::npos ? "" : s.substr (b, e - b + 1);
}

// Splits a Markdown table row into cells; "\|" is a literal bar.
std::vector<std::string>
cells_of (const std::string &line)
{
  std::vector<std::string> cells;
  std::string cur;
  std::string s = trim (line);
  if (s.size () < 2 || s.front () != '|')
    return cells;
  for (size_t i = 1; i < s.size (); i++) {
    if (s[i] == '\\' && i + 1 < s.size () && s[i + 1] == '|') {
      cur += '|';
      i++;
    } else if (s[i] == '|') {
      cells.push_back (trim (cur));
      cur.clear ();
    } else {
      cur += s[i];
    }
  }
  return cells;
}

std::string
strip_backticks (const std::string &s)
{
  std::string out;
  for (char c : s)
    if (c != '`')
      out += c;
  return trim (out);
}

// "−" (U+2212) as "-", so the doc may use the typographic minus.
std::string
ascii_minus (std::string s)
{
  const std::string minus = "\xe2\x88\x92";
  for (size_t p; (p = s.find (minus)) != std::string::npos;)
    s.replace (p, minus.size (), "-");
  return s;
}

// Each element's property table, keyed by the element named in backticks in
// the "## " heading above it.
std::map<std::string, Table>
read_tables (const std::string &path, std::string *error)
{
  std::map<std::string, Table> tables;
  std::ifstream in (path);
  if (!in) {
    *error = "cannot read " + path + ": the element reference is part of the tree";
    return tables;
  }
  std::string line, element;
  Table *current = nullptr;
  bool in_table = false, in_code = false;
  for (int n = 1; std::getline (in, line); n++) {
    // A table inside a code block (or after a block left open) is not
    // rendered as a table: it does not count.
    if (trim (line).rfind ("```", 0) == 0)
      in_code = !in_code;
    if (in_code || trim (line).rfind ("```", 0) == 0) {
      current = in_table ? nullptr : current;
      in_table = false;
      continue;
    }
    if (line.rfind ("## ", 0) == 0) {
      element.clear ();
      size_t a = line.find ('`'), b = a == std::string::npos ? a : line.find ('`', a + 1);
      if (b != std::string::npos)
        element = line.substr (a + 1, b - a - 1);
      current = nullptr;
      in_table = false;
      continue;
    }
    std::vector<std::string> cells = cells_of (line);
    if (cells.empty ()) {
      if (in_table)
        current = nullptr; // only the first property table of a section
      in_table = false;
      continue;
    }
    if (!in_table) {
      in_table = true;
      if (!element.empty () && !cells.empty () && cells[0] == "property" && !tables.count (element)) {
        current = &tables[element];
        current->line = n;
        std::vector<std::string> want = {"property", "type", "range", "default", "meaning"};
        if (cells != want)
          current->problems.push_back (
              path + ":" + std::to_string (n)
              + ": the header must be | property | type | range | default | meaning |");
      }
      continue;
    }
    if (!current || cells[0].find_first_not_of ("-: ") == std::string::npos)
      continue; // the |---| line
    if (cells.size () < 5) {
      current->problems.push_back (path + ":" + std::to_string (n) + ": a row needs 5 cells");
      continue;
    }
    std::stringstream names (cells[0]);
    for (std::string name; std::getline (names, name, ',');) {
      name = strip_backticks (name);
      if (current->rows.count (name))
        current->problems.push_back (path + ":" + std::to_string (n) + ": '" + name + "' is listed twice");
      current->rows[name] = Row{n, cells[1], cells[2], cells[3]};
    }
  }
  return tables;
}

std::string
type_word (GParamSpec *p)
{
  GType t = G_PARAM_SPEC_VALUE_TYPE (p);
  switch (G_TYPE_FUNDAMENTAL (t)) {
  case G_TYPE_BOOLEAN:
    return "bool";
  case G_TYPE_INT:
    return "int";
  case G_TYPE_UINT:
    return "uint";
  case G_TYPE_INT64:
    return "int64";
  case G_TYPE_UINT64:
    return "uint64";
  case G_TYPE_DOUBLE:
    return "double";
  case G_TYPE_FLOAT:
    return "float";
  case G_TYPE_STRING:
    return "string";
  case G_TYPE_ENUM:
    return "enum";
  case G_TYPE_FLAGS:
    return "flags";
  default:
    return g_type_name (t);
  }
}

bool
parse_number (const std::string &text, double *v)
{
  std::string s = ascii_minus (strip_backticks (text));
  if (s.empty ())
    return false;
  char *end = nullptr;
  *v = std::strtod (s.c_str (), &end);
  return end && *end == '\0';
}

bool
same_number (double a, double b)
{
  return a == b || std::fabs (a - b) <= 1e-9 * std::max (std::fabs (a), std::fabs (b));
}

std::string
fmt (double v)
{
  std::ostringstream o;
  o.precision (15);
  o << v;
  return o.str ();
}

// The value before an optional " (remark)".
std::string
value_of (const std::string &cell)
{
  std::string s = cell;
  size_t paren = s.find (" (");
  if (paren != std::string::npos && s.back () == ')')
    s = s.substr (0, paren);
  return trim (s);
}

struct Numeric {
  bool ok = false;
  double min = 0, max = 0, def = 0, type_max = 0;
};

Numeric
numeric_of (GParamSpec *p)
{
  Numeric n;
  n.ok = true;
  switch (G_TYPE_FUNDAMENTAL (G_PARAM_SPEC_VALUE_TYPE (p))) {
#define NUM(T, CAST, MAXV)                                                                                   \
  n.min = CAST (p)->minimum;                                                                                 \
  n.max = CAST (p)->maximum;                                                                                 \
  n.def = CAST (p)->default_value;                                                                           \
  n.type_max = MAXV;                                                                                         \
  break;
  case G_TYPE_INT:
    NUM (int, G_PARAM_SPEC_INT, G_MAXINT)
  case G_TYPE_UINT:
    NUM (uint, G_PARAM_SPEC_UINT, G_MAXUINT)
  case G_TYPE_INT64:
    NUM (int64, G_PARAM_SPEC_INT64, (double)G_MAXINT64)
  case G_TYPE_UINT64:
    NUM (uint64, G_PARAM_SPEC_UINT64, (double)G_MAXUINT64)
  case G_TYPE_DOUBLE:
    NUM (double, G_PARAM_SPEC_DOUBLE, G_MAXDOUBLE)
  case G_TYPE_FLOAT:
    NUM (float, G_PARAM_SPEC_FLOAT, G_MAXFLOAT)
#undef NUM
  default:
    n.ok = false;
  }
  return n;
}

using Problem = std::function<void (const std::string &)>;

// The type cell (", read-only" when the element has it read-only).
void
check_type (GParamSpec *p, const Row &row, const Problem &problem)
{
  const bool writable = (p->flags & G_PARAM_WRITABLE) != 0;
  std::string type = strip_backticks (row.type);
  bool says_ro = false;
  size_t comma = type.find (',');
  if (comma != std::string::npos) {
    says_ro = trim (type.substr (comma + 1)) == "read-only";
    if (!says_ro)
      problem ("type cell '" + row.type + "': only \", read-only\" may follow the type");
    type = trim (type.substr (0, comma));
  }
  if (type != type_word (p))
    problem ("type is " + type_word (p) + " in the element, the table says '" + type + "'");
  if (says_ro == writable)
    problem (writable
                 ? "the element lets it be written; the table says read-only"
                 : "the element has it read-only; the table must say \"" + type_word (p) + ", read-only\"");
}

// A number's range cell ("MIN … MAX", "max" for the type's largest) and
// default.
void
check_numeric (const Numeric &n, const std::string &range, const std::string &def, const Row &row,
               const Problem &problem)
{
  const std::string sep = "\xe2\x80\xa6"; // "…"
  size_t s = range.find (sep);
  double lo = 0, hi = 0;
  std::string hi_text = s == std::string::npos ? "" : strip_backticks (range.substr (s + sep.size ()));
  bool ok = s != std::string::npos && parse_number (range.substr (0, s), &lo)
            && (hi_text == "max" ? (hi = n.type_max, true) : parse_number (hi_text, &hi));
  if (!ok)
    problem ("range cell '" + range + "' is not \"MIN … MAX\" (the element: " + fmt (n.min) + " … "
             + fmt (n.max) + ")");
  else if (!same_number (lo, n.min) || !same_number (hi, n.max))
    problem ("range is " + fmt (n.min) + " … " + fmt (n.max) + " in the element, the table says " + fmt (lo)
             + " … " + (hi_text == "max" ? std::string ("max") : fmt (hi)));
  double d = 0;
  if (!parse_number (def, &d))
    problem ("default cell '" + row.def + "' is not a number (the element: " + fmt (n.def) + ")");
  else if (!same_number (d, n.def))
    problem ("default is " + fmt (n.def) + " in the element, the table says " + def);
}

// An enum's range cell (every nick, no other) and default.
void
check_enum (GParamSpec *p, GType vt, const std::string &range, const std::string &def, const Problem &problem)
{
  GEnumClass *klass = static_cast<GEnumClass *> (g_type_class_ref (vt));
  std::set<std::string> nicks, listed;
  for (guint i = 0; i < klass->n_values; i++)
    nicks.insert (klass->values[i].value_nick);
  std::stringstream ss (range);
  for (std::string nick; std::getline (ss, nick, ',');)
    listed.insert (strip_backticks (nick));
  for (const auto &nick : nicks)
    if (!listed.count (nick))
      problem ("the value '" + nick + "' is missing from the range cell");
  for (const auto &nick : listed)
    if (!nicks.count (nick))
      problem ("the range cell lists '" + nick + "', which the element does not have");
  GEnumValue *v = g_enum_get_value (klass, G_PARAM_SPEC_ENUM (p)->default_value);
  std::string want = v ? v->value_nick : "?";
  if (strip_backticks (def) != want)
    problem ("default is " + want + " in the element, the table says " + def);
  g_type_class_unref (klass);
}

// The default cell of a boolean, a string, or a type without a default (—).
void
check_other_default (GParamSpec *p, GType vt, const std::string &def, const Problem &problem)
{
  if (vt == G_TYPE_BOOLEAN) {
    std::string want = G_PARAM_SPEC_BOOLEAN (p)->default_value ? "true" : "false";
    g_autofree char *got = g_ascii_strdown (strip_backticks (def).c_str (), -1);
    if (want != got)
      problem ("default is " + want + " in the element, the table says " + def);
  } else if (vt == G_TYPE_STRING) {
    const char *d = G_PARAM_SPEC_STRING (p)->default_value;
    if (!d) {
      if (def != "NULL")
        problem ("default is NULL in the element, the table says " + def);
    } else if (def.size () < 2 || def.front () != '`' || def.back () != '`'
               || def.substr (1, def.size () - 2) != d) {
      problem (std::string ("default is \"") + d + "\" in the element, the table must say `" + d
               + "` (it says " + def + ")");
    }
  } else if (def != "—") {
    problem ("a " + type_word (p) + " has no default to document: the default cell must be —");
  }
}

// Problems with one documented row, each naming the element and property.
std::vector<std::string>
check_row (const std::string &element, GParamSpec *p, const Row &row)
{
  std::vector<std::string> out;
  const std::string where = std::string (kDoc) + ":" + std::to_string (row.line) + ": " + element
                            + " property '" + p->name + "': ";
  auto problem = [&] (const std::string &what) { out.push_back (where + what); };

  check_type (p, row, problem);
  const std::string range = trim (row.range), def = value_of (row.def);
  const bool no_range = range.empty () || range == "—";
  GType vt = G_PARAM_SPEC_VALUE_TYPE (p);
  if (Numeric n = numeric_of (p); n.ok) {
    check_numeric (n, range, def, row, problem);
    return out;
  }
  if (G_TYPE_IS_ENUM (vt)) {
    check_enum (p, vt, range, def, problem);
    return out;
  }
  if (!no_range)
    problem ("range cell '" + range + "' must be empty or — for a " + type_word (p));
  check_other_default (p, vt, def, problem);
  return out;
}

class ElementDocs : public ::testing::TestWithParam<const char *> {
protected:
  static void SetUpTestSuite ()
  {
    gst_init (nullptr, nullptr);
    tables_ = read_tables (std::string (LIVEMICRO_SOURCE_DIR) + "/" + kDoc, &error_);
  }
  static std::map<std::string, Table> tables_;
  static std::string error_;
};
std::map<std::string, Table> ElementDocs::tables_;
std::string ElementDocs::error_;

const char *const kElements[]
    = {"microscopesrc", "tumorfeatures", "featureoverlay", "privacymask", "i420convert"};

// A new element of the plugin must get a section and join kElements.
TEST_F (ElementDocs, EveryElementOfThePluginIsDocumented)
{
  ASSERT_TRUE (error_.empty ()) << error_;
  GstPlugin *plugin = gst_registry_find_plugin (gst_registry_get (), "livemicro");
  ASSERT_NE (plugin, nullptr) << "the livemicro plugin is not in GST_PLUGIN_PATH";
  gst_object_unref (plugin);
  GList *features = gst_registry_get_feature_list_by_plugin (gst_registry_get (), "livemicro");
  std::set<std::string> known (std::begin (kElements), std::end (kElements));
  int n = 0;
  for (GList *l = features; l; l = l->next) {
    if (!GST_IS_ELEMENT_FACTORY (l->data))
      continue;
    const char *name = gst_plugin_feature_get_name (GST_PLUGIN_FEATURE (l->data));
    n++;
    EXPECT_TRUE (known.count (name)) << "element '" << name
                                     << "' of the livemicro plugin is not checked by this test: "
                                     << "add it to kElements and give it a \"## `" << name
                                     << "`\" section with a "
                                     << "property table in " << kDoc;
  }
  gst_plugin_feature_list_free (features);
  EXPECT_EQ (n, (int)known.size ()) << "kElements names an element the plugin does not have";
}

TEST_P (ElementDocs, PropertyTableMatchesTheElement)
{
  ASSERT_TRUE (error_.empty ()) << error_;
  const std::string element = GetParam ();
  GstElement *e = gst_element_factory_make (element.c_str (), nullptr);
  ASSERT_NE (e, nullptr) << "cannot make '" << element << "': is the livemicro plugin built?";
  gst_object_ref_sink (e);
  auto it = tables_.find (element);
  if (it == tables_.end ()) {
    gst_object_unref (e);
    FAIL () << kDoc << " has no property table for " << element << " (a \"## `" << element
            << "`\" section whose first table has the header | property | type | range | "
               "default | meaning |, outside any code block: is a ``` left open above it?)";
  }
  const Table &table = it->second;
  for (const auto &p : table.problems)
    ADD_FAILURE () << p;

  GObjectClass *klass = G_OBJECT_GET_CLASS (e);
  guint n = 0;
  GParamSpec **specs = g_object_class_list_properties (klass, &n);
  for (guint i = 0; i < n; i++) {
    GParamSpec *p = specs[i];
    auto row = table.rows.find (p->name);
    if (row == table.rows.end ()) {
      // The element's own properties must be listed; inherited ones may be.
      if (p->owner_type == G_OBJECT_TYPE (e))
        ADD_FAILURE () << kDoc << ":" << table.line << ": " << element << "'s table lacks "
                       << "the property '" << p->name << "' (" << type_word (p) << "): add a row for it";
      continue;
    }
    for (const auto &problem : check_row (element, p, row->second))
      ADD_FAILURE () << problem;
  }
  g_free (specs);
  for (const auto &[name, row] : table.rows)
    if (!g_object_class_find_property (klass, name.c_str ()))
      ADD_FAILURE () << kDoc << ":" << row.line << ": " << element << "'s table lists '" << name
                     << "', which the element does not have";
  gst_object_unref (e);
}

INSTANTIATE_TEST_SUITE_P (Livemicro, ElementDocs, ::testing::ValuesIn (kElements),
                          [] (const ::testing::TestParamInfo<const char *> &info) {
                            return std::string (info.param);
                          });

} // namespace
