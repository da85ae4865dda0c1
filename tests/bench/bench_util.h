// What every benchmark needs: its command line, medians and percentiles of
// its samples, and writing its results (built with a JsonBuilder) to its
// JSON file.
#pragma once

#include <json-glib/json-glib.h>

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace livemicro::bench {

// A benchmark's options: "--name value" with a whole number of at least
// `min`, a number of at least `min`, or a text; "--name" alone for a flag.
struct IntOption {
  const char *name;
  int *value;
  int min;
};
struct DoubleOption {
  const char *name;
  double *value;
  double min;
};
// A text option named without "--" (e.g. "WHAT") takes the word given
// without a name.  With `choices` ("a|b|c") the text is one of them, or
// with `list` a ','-separated list of them.
struct TextOption {
  const char *name;
  std::string *value;
  const char *choices = nullptr;
  bool list = false;
};
struct FlagOption {
  const char *name;
  bool *value;
};

// The first item of `value` (one item, or ','-separated ones with `list`)
// that is not among `choices` ("a|b|c"); nullopt when all are.
inline std::optional<std::string>
unknown_choice (const std::string &value, const char *choices, bool list)
{
  std::vector<std::string> items;
  std::istringstream in (value);
  for (std::string item; list && std::getline (in, item, ',');)
    items.push_back (item);
  if (items.empty ())
    items.push_back (value);
  const std::string known = std::string ("|") + choices + "|";
  for (const std::string &item : items)
    if (known.find ("|" + item + "|") == std::string::npos)
      return item;
  return std::nullopt;
}

// Reads the command line into the options.  The status main returns at
// once when the benchmark is not to run: 0 after --help (the usage
// printed), 2 for an option it does not know, one without its value, a
// number that is not one or is below its least, or a text not among its
// choices (said on stderr with the usage).
inline std::optional<int>
parse_options (int argc, char **argv, const char *usage, std::initializer_list<IntOption> ints,
               std::initializer_list<TextOption> texts = {}, std::initializer_list<DoubleOption> doubles = {},
               std::initializer_list<FlagOption> flags = {})
{
  auto fail = [usage] (const std::string &why) {
    std::fprintf (stderr, "%s\nusage: %s\n", why.c_str (), usage);
    return 2;
  };
  for (int i = 1; i < argc; i++) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::printf ("usage: %s\n", usage);
      return 0;
    }
    const bool word = arg.empty () || arg[0] != '-';
    const IntOption *number = nullptr;
    const DoubleOption *real = nullptr;
    const TextOption *text = nullptr;
    const FlagOption *flag = nullptr;
    for (const IntOption &o : ints)
      if (arg == o.name)
        number = &o;
    for (const DoubleOption &o : doubles)
      if (arg == o.name)
        real = &o;
    for (const TextOption &o : texts)
      if (word ? o.name[0] != '-' : arg == o.name)
        text = &o;
    for (const FlagOption &o : flags)
      if (arg == o.name)
        flag = &o;
    if (flag) {
      *flag->value = true;
      continue;
    }
    if (!number && !real && !text)
      return fail ("unknown " + std::string (word ? "argument '" : "option '") + arg + "'");
    if (!word && i + 1 >= argc)
      return fail (arg + " needs a value");
    const char *value = word ? argv[i] : argv[++i];
    if (text) {
      if (text->choices)
        if (auto bad = unknown_choice (value, text->choices, text->list))
          return fail (std::string (text->name) + " takes " + (text->list ? "a list of " : "") + text->choices
                       + ", not '" + *bad + "'");
      *text->value = value;
      continue;
    }
    char *end = nullptr;
    errno = 0;
    if (real) {
      const double x = std::strtod (value, &end);
      if (end == value || *end || errno || !(x >= real->min)) {
        char least[32];
        std::snprintf (least, sizeof least, "%g", real->min);
        return fail (arg + " wants a number of at least " + least + ", not '" + value + "'");
      }
      *real->value = x;
      continue;
    }
    const long n = std::strtol (value, &end, 10);
    if (end == value || *end || errno || n < number->min || n > INT_MAX)
      return fail (arg + " wants a whole number of at least " + std::to_string (number->min) + ", not '"
                   + value + "'");
    *number->value = (int)n;
  }
  return std::nullopt;
}

// The upper median (0 for no samples).
inline double
median (std::vector<double> v)
{
  std::sort (v.begin (), v.end ());
  return v.empty () ? 0 : v[v.size () / 2];
}

// The median of one figure over runs: `figure (run)` of each.
template <class Run, class Figure>
double
median_of (const std::vector<Run> &runs, Figure figure)
{
  std::vector<double> v;
  for (const Run &r : runs)
    v.push_back (figure (r));
  return median (v);
}

// The q-quantile, nearest rank (0 for no samples).
inline double
percentile (std::vector<double> v, double q)
{
  if (v.empty ())
    return 0;
  std::sort (v.begin (), v.end ());
  return v[std::min (v.size () - 1, (size_t)(q * v.size ()))];
}

// CPU time (utime + stime, seconds) and name of a process or thread from its
// /proc stat file; 0 and "" when it is gone.
inline double
stat_cpu_seconds (const std::string &stat_path, std::string *comm = nullptr)
{
  std::ifstream f (stat_path);
  std::string text ((std::istreambuf_iterator<char> (f)), std::istreambuf_iterator<char> ());
  size_t open = text.find ('('), paren = text.rfind (')');
  if (open == std::string::npos || paren == std::string::npos || paren < open)
    return 0;
  if (comm)
    *comm = text.substr (open + 1, paren - open - 1);
  // After "pid (comm) ": state is field 3; utime and stime are fields 14, 15.
  std::istringstream rest (text.substr (paren + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; i++) {
    if (i == 14)
      utime = std::atof (field.c_str ());
    else if (i == 15)
      stime = std::atof (field.c_str ());
  }
  return (utime + stime) / (double)sysconf (_SC_CLK_TCK);
}

// CPU time of a process so far, in seconds; 0 when it is gone.
inline double
cpu_seconds (int pid)
{
  return stat_cpu_seconds ("/proc/" + std::to_string (pid) + "/stat");
}

// CPU time so far of a process's live threads, in seconds, summed by thread
// name (a GStreamer streaming thread is named after its pad, "in:src" for a
// queue named "in"), with how many threads bear each name.
struct ThreadGroup {
  double seconds = 0;
  int threads = 0;
};
inline std::map<std::string, ThreadGroup>
thread_cpu_seconds (int pid)
{
  std::map<std::string, ThreadGroup> groups;
  const std::string dir = "/proc/" + std::to_string (pid) + "/task";
  if (GDir *d = g_dir_open (dir.c_str (), 0, nullptr)) {
    while (const char *tid = g_dir_read_name (d)) {
      std::string comm;
      double s = stat_cpu_seconds (dir + "/" + tid + "/stat", &comm);
      if (comm.empty ())
        continue;
      groups[comm].seconds += s;
      groups[comm].threads++;
    }
    g_dir_close (d);
  }
  return groups;
}

// Pins the calling thread (and the threads it starts later) to CPU 0, so a
// one-core figure is one core's; false when the system refuses.
inline bool
pin_to_first_cpu ()
{
  cpu_set_t one;
  CPU_ZERO (&one);
  CPU_SET (0, &one);
  return sched_setaffinity (0, sizeof one, &one) == 0;
}

// "load_average": [1, 5, 15 min at the start, the same at the end].
inline void
add_load_average (JsonBuilder *b, const double start[3], const double end[3])
{
  json_builder_set_member_name (b, "load_average");
  json_builder_begin_array (b);
  for (int i = 0; i < 6; i++)
    json_builder_add_double_value (b, i < 3 ? start[i] : end[i - 3]);
  json_builder_end_array (b);
}

// Writes the results and says where, or why not.

inline bool
write_json (JsonBuilder *b, const std::string &path)
{
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  json_generator_set_pretty (gen, TRUE);
  g_autoptr (GError) err = nullptr;
  if (!json_generator_to_file (gen, path.c_str (), &err)) {
    std::fprintf (stderr, "could not write %s: %s\n", path.c_str (), err->message);
    return false;
  }
  std::printf ("wrote %s\n", path.c_str ());
  return true;
}

} // namespace livemicro::bench
