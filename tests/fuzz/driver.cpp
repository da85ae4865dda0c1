// A deterministic, coverage-guided mutation fuzzer for libFuzzer-style
// targets (`LLVMFuzzerTestOneInput`), built with g++ alone: CI has no clang.
//
//   fuzz-NAME [options] CORPUS_DIR...   run every file of the corpus, then
//                                       mutate for -runs iterations
//   fuzz-NAME [options] FILE...         replay these inputs (a crash file)
//
// Options use libFuzzer's spelling, so a test line works with both engines:
//   -seed=N            the mutation sequence (default 1); a seed and a
//                      -runs count give the same inputs on every machine
//   -runs=N            mutation iterations after the corpus (default 10000)
//   -max_total_time=S  stop mutating after S seconds even if -runs is not
//                      reached (0: no cap); the iterations done are printed
//   -max_len=N         longest mutated input in bytes (default 4096)
//   -dict=FILE         tokens to insert (libFuzzer/AFL format); repeatable
//   -timeout=S         one input running longer than this is a hang (10)
//   -artifact_prefix=P where crash, hang and leak inputs are written
//   -save_new=DIR      write inputs that found new coverage into DIR
//   -detect_leaks=0|1  LeakSanitizer after each input that allocated more
//                      than it freed (default 1; ASan builds only)
//
// Coverage: the target and the parser sources are compiled with
// -fsanitize-coverage=trace-pc; __sanitizer_cov_trace_pc below records
// edges (AFL style: hashed PC pairs, hit counts in buckets).  An input that
// reaches new edges joins the pool that later mutations start from.  Without
// that flag the driver still works, as a plain mutation fuzzer.
//
// On SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL, SIGTRAP (a fatal GLib
// critical) and a sanitizer's report the current input is written with
// async-signal-safe calls to P + "crash-HASH" (a hang: "timeout-HASH", a
// leak: "leak-HASH"), the path and the replay command are printed, and the
// signal goes on to the previous handler (the sanitizer's report, or the
// default action).
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);
extern "C" int LLVMFuzzerInitialize (int *argc, char ***argv) __attribute__ ((weak));
extern "C" void __sanitizer_set_death_callback (void (*) (void)) __attribute__ ((weak));
extern "C" int __sanitizer_install_malloc_and_free_hooks (void (*) (const volatile void *, size_t),
                                                          void (*) (const volatile void *))
    __attribute__ ((weak));
extern "C" int __lsan_do_recoverable_leak_check (void) __attribute__ ((weak));

// g++ links UBSan as its own runtime, which does not call ASan's death
// callback: make a UBSan report abort, so that the SIGABRT handler writes
// the input.  (UBSAN_OPTIONS still overrides these.)
extern "C" const char *
__ubsan_default_options (void)
{
  return "print_stacktrace=1:halt_on_error=1:abort_on_error=1";
}

// ---- coverage -------------------------------------------------------------

namespace {

constexpr size_t kMapSize = 1 << 16;
uint8_t g_hits[kMapSize];
uintptr_t g_prev_loc;

} // namespace

// Called by g++ at every basic block of code compiled with
// -fsanitize-coverage=trace-pc.  PCs are taken relative to this function so
// that the map does not depend on where ASLR loaded the executable.
extern "C" __attribute__ ((no_sanitize ("address", "undefined"))) void
__sanitizer_cov_trace_pc (void)
{
  uintptr_t pc = (uintptr_t)__builtin_return_address (0) - (uintptr_t)&__sanitizer_cov_trace_pc;
  uintptr_t cur = (uintptr_t)((uint64_t)pc * 0x9E3779B97F4A7C15ull >> 48);
  g_hits[(cur ^ g_prev_loc) & (kMapSize - 1)]++;
  g_prev_loc = cur >> 1;
}

namespace {

// ---- the input being run, for the signal handlers ------------------------

const uint8_t *volatile g_cur_data = nullptr;
volatile size_t g_cur_size = 0;
char g_artifact_prefix[2048] = "./";
char g_exe[2048] = "fuzz-target";
char g_crash_path[4096];
const char *volatile g_replaying = nullptr; // the file being replayed
volatile sig_atomic_t g_dumped = 0;
int g_timeout_s = 10;
struct sigaction g_old_actions[65];

void
put (const char *s)
{
  size_t n = strlen (s);
  while (n > 0) {
    ssize_t w = write (STDERR_FILENO, s, n);
    if (w <= 0)
      return;
    s += w;
    n -= (size_t)w;
  }
}

void
put_uint (uint64_t v, int base = 10, int min_digits = 1)
{
  char b[32];
  int i = sizeof b;
  b[--i] = 0;
  do {
    b[--i] = "0123456789abcdef"[v % (uint64_t)base];
    v /= (uint64_t)base;
    min_digits--;
  } while ((v || min_digits > 0) && i > 0);
  put (b + i);
}

uint64_t
fnv1a (const uint8_t *p, size_t n)
{
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

// Everything here is async-signal-safe: no malloc, no stdio.
void
append (char *dst, size_t cap, const char *s)
{
  size_t n = strlen (dst);
  while (*s && n + 1 < cap)
    dst[n++] = *s++;
  dst[n] = 0;
}

void
dump_input (const char *kind)
{
  if (const char *file = g_replaying) {
    put ("\n==fuzz== ");
    put (kind);
    put (" replaying ");
    put (file);
    put ("\n");
    return;
  }
  if (!g_dumped) {
    g_dumped = 1;
    const uint8_t *data = g_cur_data;
    size_t size = g_cur_size;
    char hex[17];
    uint64_t h = fnv1a (data, size);
    for (int i = 15; i >= 0; i--, h >>= 4)
      hex[i] = "0123456789abcdef"[h & 15];
    hex[16] = 0;
    g_crash_path[0] = 0;
    append (g_crash_path, sizeof g_crash_path, g_artifact_prefix);
    append (g_crash_path, sizeof g_crash_path, kind);
    append (g_crash_path, sizeof g_crash_path, "-");
    append (g_crash_path, sizeof g_crash_path, hex);
    int fd = open (g_crash_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    bool written = fd >= 0;
    for (size_t off = 0; fd >= 0 && off < size;) {
      ssize_t w = write (fd, data + off, size - off);
      if (w <= 0) {
        written = false;
        break;
      }
      off += (size_t)w;
    }
    if (fd >= 0)
      close (fd);
    put ("\n==fuzz== ");
    put (kind);
    put (" on an input of ");
    put_uint (size);
    put (" bytes");
    if (size <= 512) {
      put (": \"");
      for (size_t i = 0; i < size; i++) {
        uint8_t c = data[i];
        if (c == '\\' || c == '"') {
          char e[3] = {'\\', (char)c, 0};
          put (e);
        } else if (c >= 0x20 && c < 0x7f) {
          char e[2] = {(char)c, 0};
          put (e);
        } else {
          put ("\\x");
          put_uint (c, 16, 2);
        }
      }
      put ("\"");
    }
    put ("\n");
    if (!written)
      g_crash_path[0] = 0;
  }
  if (g_crash_path[0]) {
    put ("==fuzz== input written to ");
    put (g_crash_path);
    put ("\n==fuzz== replay it: ");
    put (g_exe);
    put (" ");
    put (g_crash_path);
    put ("\n");
  } else {
    put ("==fuzz== could not write the input under ");
    put (g_artifact_prefix);
    put ("\n");
  }
}

void
on_fatal_signal (int sig, siginfo_t *info, void *)
{
  if (sig == SIGALRM) {
    put ("\n==fuzz== an input ran longer than ");
    put_uint ((uint64_t)g_timeout_s);
    put (" s (a hang)");
  }
  dump_input (sig == SIGALRM ? "timeout" : "crash");
  // On to the previous handler (a sanitizer's report) or the default action.
  sigaction (sig, &g_old_actions[sig], nullptr);
  // A fault (si_code > 0) happens again when the instruction is retried;
  // abort(), raise() and the alarm have to be raised again.
  if (sig == SIGALRM || sig == SIGABRT || sig == SIGTRAP || info == nullptr || info->si_code <= 0)
    raise (sig);
}

void
on_sanitizer_death ()
{
  dump_input ("crash");
}

void
install_handlers ()
{
  static std::vector<uint8_t> alt (256 * 1024);
  stack_t ss{};
  ss.ss_sp = alt.data ();
  ss.ss_size = alt.size ();
  sigaltstack (&ss, nullptr); // a stack overflow still reaches the handler
  for (int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGALRM}) {
    struct sigaction sa {};
    sa.sa_sigaction = on_fatal_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset (&sa.sa_mask);
    sigaction (sig, &sa, &g_old_actions[sig]);
  }
  if (__sanitizer_set_death_callback)
    __sanitizer_set_death_callback (on_sanitizer_death);
}

// ---- random numbers: splitmix64, the same sequence everywhere ------------

class Rng {
public:
  explicit Rng (uint64_t seed) : s_ (seed) {}
  uint64_t next ()
  {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n); n > 0.
  size_t below (size_t n) { return (size_t)(next () % n); }
  bool one_in (size_t n) { return below (n) == 0; }

private:
  uint64_t s_;
};

using Bytes = std::vector<uint8_t>;

// ---- dictionaries (libFuzzer/AFL format: name="value" with \\ \" \xNN) ---

bool
parse_dict_line (const std::string &line, Bytes &out)
{
  size_t q = line.find ('"');
  size_t end = line.rfind ('"');
  if (q == std::string::npos || end == q)
    return false;
  out.clear ();
  for (size_t i = q + 1; i < end; i++) {
    char c = line[i];
    if (c != '\\') {
      out.push_back ((uint8_t)c);
      continue;
    }
    if (++i >= end)
      return false;
    c = line[i];
    if (c == 'x') {
      if (i + 2 >= end || !isxdigit ((unsigned char)line[i + 1]) || !isxdigit ((unsigned char)line[i + 2]))
        return false;
      out.push_back ((uint8_t)strtoul (line.substr (i + 1, 2).c_str (), nullptr, 16));
      i += 2;
    } else if (c == 'n') {
      out.push_back ('\n');
    } else if (c == 'r') {
      out.push_back ('\r');
    } else if (c == 't') {
      out.push_back ('\t');
    } else {
      out.push_back ((uint8_t)c); // \\ and \"
    }
  }
  return true;
}

bool
read_file (const std::string &path, Bytes &out)
{
  FILE *f = fopen (path.c_str (), "rb");
  if (!f)
    return false;
  out.clear ();
  uint8_t buf[65536];
  size_t n;
  while ((n = fread (buf, 1, sizeof buf, f)) > 0)
    out.insert (out.end (), buf, buf + n);
  bool ok = !ferror (f);
  fclose (f);
  return ok;
}

bool
load_dict (const std::string &path, std::vector<Bytes> &tokens)
{
  Bytes text;
  if (!read_file (path, text))
    return false;
  std::string all (text.begin (), text.end ());
  size_t pos = 0;
  int line_no = 0;
  while (pos < all.size ()) {
    size_t nl = all.find ('\n', pos);
    std::string line = all.substr (pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? all.size () : nl + 1;
    line_no++;
    size_t first = line.find_first_not_of (" \t\r");
    if (first == std::string::npos || line[first] == '#')
      continue;
    Bytes tok;
    if (!parse_dict_line (line, tok)) {
      fprintf (stderr, "%s:%d: not a dictionary entry: %s\n", path.c_str (), line_no, line.c_str ());
      return false;
    }
    if (!tok.empty ())
      tokens.push_back (tok);
  }
  return true;
}

// ---- the mutator ----------------------------------------------------------

// Tokens every target gets: bytes that break text parsers.
const char *const kGenericTokens[] = {
    "\0",
    "\xff",
    "\xc0\x80",
    "\xed\xa0\x80",
    "\xf4\x90\x80\x80",
    "\xe2\x80\xae",
    "\xef\xbb\xbf",
    "\r\n",
    "\n",
    "\r",
    "%",
    "%00",
    "%zz",
    "\\u0000",
    "\\",
};
const size_t kGenericTokenLens[] = {1, 1, 2, 3, 4, 3, 3, 2, 1, 1, 1, 3, 3, 6, 1};

// Numbers as text: the edges of int32/int64/double parsing.
const char *const kNumberTexts[] = {"0",
                                    "-0",
                                    "1",
                                    "-1",
                                    "2",
                                    "255",
                                    "256",
                                    "65535",
                                    "65536",
                                    "2147483647",
                                    "2147483648",
                                    "-2147483648",
                                    "-2147483649",
                                    "4294967295",
                                    "4294967296",
                                    "4294967306",
                                    "9223372036854775807",
                                    "9223372036854775808",
                                    "-9223372036854775808",
                                    "-9223372036854775809",
                                    "18446744073709551615",
                                    "18446744073709551616",
                                    "99999999999999999999999999999",
                                    "1e308",
                                    "1e309",
                                    "-1e308",
                                    "-1e309",
                                    "1.7976931348623157e308",
                                    "4.9e-324",
                                    "1e-320",
                                    "2.2250738585072014e-308",
                                    "0.1",
                                    "1e-7",
                                    "1e6",
                                    "1e7",
                                    "1e9",
                                    "1e10",
                                    "0.0",
                                    "-0.0",
                                    "1.",
                                    ".5",
                                    "1e",
                                    "1e+",
                                    "--1",
                                    "+1",
                                    "01",
                                    "0x10",
                                    "NaN",
                                    "nan",
                                    "-nan",
                                    "inf",
                                    "-inf",
                                    "Infinity",
                                    "-Infinity",
                                    "1e400",
                                    "1,5",
                                    " 1",
                                    "1 "};

const uint64_t kInteresting[] = {0,
                                 1,
                                 2,
                                 3,
                                 4,
                                 7,
                                 8,
                                 16,
                                 31,
                                 32,
                                 64,
                                 100,
                                 127,
                                 128,
                                 255,
                                 256,
                                 512,
                                 1000,
                                 1024,
                                 4096,
                                 32767,
                                 32768,
                                 65535,
                                 65536,
                                 0x7fffffffull,
                                 0x80000000ull,
                                 0xffffffffull,
                                 0x100000000ull,
                                 0x7fffffffffffffffull,
                                 0x8000000000000000ull,
                                 0xffffffffffffffffull,
                                 0xfffffffffffffffeull,
                                 0xffffffffffffff80ull};

struct Pool {
  std::vector<Bytes> inputs;
};

class Mutator {
public:
  Mutator (uint64_t seed, size_t max_len, std::vector<Bytes> dict)
      : rng_ (seed), max_len_ (max_len), dict_ (std::move (dict))
  {}
  Rng &rng () { return rng_; }

  // Applies 1, 2, 4, 8 or 16 stacked mutations.
  void mutate (Bytes &d, const Pool &pool)
  {
    int n = 1 << rng_.below (5);
    for (int i = 0; i < n; i++)
      mutate_once (d, pool);
    if (d.size () > max_len_)
      d.resize (max_len_);
  }

private:
  size_t room (const Bytes &d) const { return d.size () < max_len_ ? max_len_ - d.size () : 0; }
  size_t pos (const Bytes &d) { return d.empty () ? 0 : rng_.below (d.size ()); }
  size_t insert_pos (const Bytes &d) { return rng_.below (d.size () + 1); }
  // A short length, most often small: 1-8, sometimes up to 64 or more.
  size_t length (size_t max)
  {
    if (max == 0)
      return 0;
    size_t l;
    switch (rng_.below (4)) {
    case 0:
    case 1:
      l = 1 + rng_.below (8);
      break;
    case 2:
      l = 1 + rng_.below (64);
      break;
    default:
      l = 1 + rng_.below (max);
    }
    return std::min (l, max);
  }
  const Bytes &token ()
  {
    static std::vector<Bytes> generic = [] {
      std::vector<Bytes> g;
      for (size_t i = 0; i < sizeof kGenericTokens / sizeof *kGenericTokens; i++)
        g.emplace_back ((const uint8_t *)kGenericTokens[i],
                        (const uint8_t *)kGenericTokens[i] + kGenericTokenLens[i]);
      return g;
    }();
    if (!dict_.empty () && !rng_.one_in (8))
      return dict_[rng_.below (dict_.size ())];
    return generic[rng_.below (generic.size ())];
  }
  void insert (Bytes &d, size_t at, const uint8_t *p, size_t n)
  {
    n = std::min (n, room (d));
    d.insert (d.begin () + (ptrdiff_t)at, p, p + n);
  }
  void overwrite_int (Bytes &d, int width)
  {
    if (d.size () < (size_t)width)
      return;
    uint64_t v = kInteresting[rng_.below (sizeof kInteresting / sizeof *kInteresting)];
    if (rng_.one_in (2))
      v = 0 - v; // two's complement negation, defined for unsigned
    size_t at = rng_.below (d.size () - (size_t)width + 1);
    bool big = rng_.one_in (2);
    for (int k = 0; k < width; k++)
      d[at + (size_t)k] = (uint8_t)(v >> (8 * (big ? width - 1 - k : k)));
  }
  // Replaces a run of ASCII digits (with its sign) by another number.
  bool mutate_number (Bytes &d)
  {
    if (d.empty ())
      return false;
    size_t start = pos (d);
    size_t i = start;
    while (i < d.size () && !isdigit (d[i]))
      i++;
    if (i == d.size ())
      return false;
    size_t b = i, e = i;
    while (b > 0 && (isdigit (d[b - 1]) || d[b - 1] == '-' || d[b - 1] == '.'))
      b--;
    while (e < d.size ()
           && (isdigit (d[e]) || d[e] == '.' || d[e] == 'e' || d[e] == 'E' || d[e] == '+' || d[e] == '-'))
      e++;
    std::string repl;
    if (rng_.one_in (3)) {
      // Wrapping arithmetic: the number may be anything.
      uint64_t v = (uint64_t)strtoll (
          std::string (d.begin () + (ptrdiff_t)b, d.begin () + (ptrdiff_t)e).c_str (), nullptr, 10);
      static const int64_t deltas[] = {1, -1, 2, -2, 16, -16, 1000, -1000};
      v += (uint64_t)deltas[rng_.below (8)];
      repl = std::to_string ((long long)v);
    } else {
      repl = kNumberTexts[rng_.below (sizeof kNumberTexts / sizeof *kNumberTexts)];
    }
    d.erase (d.begin () + (ptrdiff_t)b, d.begin () + (ptrdiff_t)e);
    insert (d, b, (const uint8_t *)repl.data (), repl.size ());
    return true;
  }

  // Replaces a quoted string or a number (a JSON value, a query value) by
  // a value of another type: "owner" → {}, 640 → "640", "x" → [[]].
  bool replace_literal (Bytes &d)
  {
    static const char *const values[]
        = {"{}",          "[]",          "null",  "true",  "0",        "-1",          "1.5",
           "1e999",       "\"\"",        "\"x\"", "[[]]",  "{\"\":0}", "[0]",         "[\"\"]",
           "\"\\u0000\"", "\"\\ud800\"", "-0",    "\"*\"", "[1,2,3]",  "{\"a\":[{}]}"};
    if (d.empty ())
      return false;
    size_t b = pos (d);
    while (b < d.size () && d[b] != '"' && !isdigit (d[b]) && d[b] != '-')
      b++;
    if (b >= d.size ())
      return false;
    size_t e = b + 1;
    if (d[b] == '"') {
      while (e < d.size () && d[e] != '"')
        e += d[e] == '\\' ? 2 : 1;
      e = std::min (e + 1, d.size ());
    } else {
      while (e < d.size () && (isdigit (d[e]) || (d[e] && strchr (".eE+-", d[e]))))
        e++;
    }
    d.erase (d.begin () + (ptrdiff_t)b, d.begin () + (ptrdiff_t)e);
    if (!dict_.empty () && rng_.one_in (3)) {
      const Bytes &t = token ();
      insert (d, b, t.data (), t.size ());
    } else {
      const char *v = values[rng_.below (sizeof values / sizeof *values)];
      insert (d, b, (const uint8_t *)v, strlen (v));
    }
    return true;
  }

  // Long by nature: one case per mutation, each a few lines.
  void mutate_once (Bytes &d, const Pool &pool)
  {
    switch (rng_.below (21)) {
    case 0: // flip a bit
      if (!d.empty ())
        d[pos (d)] ^= (uint8_t)(1u << rng_.below (8));
      break;
    case 1: // a random byte
      if (!d.empty ())
        d[pos (d)] = (uint8_t)rng_.next ();
      break;
    case 2: // an interesting byte
      if (!d.empty ()) {
        static const uint8_t b[] = {0,   1,   0x7f, 0x80, 0xff, ' ', '"',  '\\', '0', '9', '-', '.',
                                    ',', ':', '[',  '{',  ']',  '}', '\n', '\r', '|', '<', '>', 0xc3};
        d[pos (d)] = b[rng_.below (sizeof b)];
      }
      break;
    case 3: // small arithmetic on a byte
      if (!d.empty ())
        d[pos (d)] += (uint8_t)(rng_.below (35) - 17);
      break;
    case 4:
      overwrite_int (d, 2);
      break;
    case 5:
      overwrite_int (d, 4);
      break;
    case 6:
      overwrite_int (d, 8);
      break;
    case 7: // delete a range
      if (!d.empty ()) {
        size_t at = pos (d);
        size_t n = length (d.size () - at);
        d.erase (d.begin () + (ptrdiff_t)at, d.begin () + (ptrdiff_t)(at + n));
      }
      break;
    case 8: { // insert random bytes
      size_t n = length (16);
      Bytes r (n);
      for (auto &c : r)
        c = (uint8_t)rng_.next ();
      insert (d, insert_pos (d), r.data (), r.size ());
      break;
    }
    case 9: { // a long run of one byte (long strings, deep nesting)
      size_t n = length (std::max<size_t> (1, room (d)));
      uint8_t c = d.empty () || rng_.one_in (2) ? (uint8_t)rng_.next () : d[pos (d)];
      Bytes r (n, c);
      insert (d, insert_pos (d), r.data (), r.size ());
      break;
    }
    case 10: // duplicate a range in place
    case 11: // copy a range elsewhere
      if (!d.empty ()) {
        size_t from = pos (d);
        size_t n = length (d.size () - from);
        Bytes chunk (d.begin () + (ptrdiff_t)from, d.begin () + (ptrdiff_t)(from + n));
        if (rng_.one_in (2)) {
          insert (d, rng_.one_in (2) ? from : insert_pos (d), chunk.data (), chunk.size ());
        } else {
          size_t to = pos (d);
          for (size_t k = 0; k < chunk.size () && to + k < d.size (); k++)
            d[to + k] = chunk[k];
        }
      }
      break;
    case 12: { // splice: our head, another input's tail
      const Bytes &o = pool.inputs[rng_.below (pool.inputs.size ())];
      if (o.empty ())
        break;
      size_t a = insert_pos (d), b = rng_.below (o.size ());
      d.resize (a);
      insert (d, a, o.data () + b, o.size () - b);
      break;
    }
    case 13: { // a chunk of another input
      const Bytes &o = pool.inputs[rng_.below (pool.inputs.size ())];
      if (o.empty ())
        break;
      size_t b = rng_.below (o.size ());
      insert (d, insert_pos (d), o.data () + b, length (o.size () - b));
      break;
    }
    case 14:
    case 15: { // insert a token
      const Bytes &t = token ();
      insert (d, insert_pos (d), t.data (), t.size ());
      break;
    }
    case 16: { // overwrite with a token
      const Bytes &t = token ();
      if (d.size () >= t.size ()) {
        size_t at = rng_.below (d.size () - t.size () + 1);
        std::copy (t.begin (), t.end (), d.begin () + (ptrdiff_t)at);
      }
      break;
    }
    case 17: { // a token many times: [[[[, {"a":{"a":, long keys
      const Bytes &t = token ();
      size_t times = 2 + rng_.below ((size_t)1 << (1 + rng_.below (12)));
      times = std::min (times, room (d) / t.size ());
      Bytes r;
      r.reserve (times * t.size ());
      for (size_t k = 0; k < times; k++)
        r.insert (r.end (), t.begin (), t.end ());
      insert (d, insert_pos (d), r.data (), r.size ());
      break;
    }
    case 18:
      if (!mutate_number (d)) {
        const char *n = kNumberTexts[rng_.below (sizeof kNumberTexts / sizeof *kNumberTexts)];
        insert (d, insert_pos (d), (const uint8_t *)n, strlen (n));
      }
      break;
    case 19:
      if (!replace_literal (d) && !d.empty ())
        d[pos (d)] ^= 0x20;
      break;
    default: // truncate
      if (!d.empty ())
        d.resize (pos (d));
      break;
    }
  }

  Rng rng_;
  size_t max_len_;
  std::vector<Bytes> dict_;
};

// ---- running one input ----------------------------------------------------

uint8_t g_virgin[kMapSize];

uint8_t
bucket (uint8_t n)
{
  if (n <= 2)
    return n;
  if (n == 3)
    return 4;
  if (n < 8)
    return 8;
  if (n < 16)
    return 16;
  if (n < 32)
    return 32;
  if (n < 128)
    return 64;
  return 128;
}

// Leaks, per input (as libFuzzer does): when an input made more allocations
// than it freed, LeakSanitizer looks for unreachable blocks at once, so the
// leak is reported with the input that caused it.
bool g_detect_leaks = true;
volatile bool g_counting = false;
size_t g_mallocs, g_frees;

void
on_malloc (const volatile void *, size_t)
{
  if (g_counting)
    __atomic_add_fetch (&g_mallocs, 1, __ATOMIC_RELAXED);
}

void
on_free (const volatile void *)
{
  if (g_counting)
    __atomic_add_fetch (&g_frees, 1, __ATOMIC_RELAXED);
}

struct RunResult {
  bool new_coverage = false;
  bool rejected = false; // the target returned -1: keep it out of the pool
};

RunResult
run_one (const Bytes &input, unsigned timeout_s)
{
  // An exact-size copy, so a read one past the end is caught.
  std::unique_ptr<uint8_t[]> copy (new uint8_t[input.size ()]);
  if (!input.empty ())
    memcpy (copy.get (), input.data (), input.size ());
  memset (g_hits, 0, sizeof g_hits);
  g_prev_loc = 0;
  g_cur_data = copy.get ();
  g_cur_size = input.size ();
  g_mallocs = g_frees = 0;
  g_counting = true;
  alarm (timeout_s);
  int r = LLVMFuzzerTestOneInput (copy.get (), input.size ());
  alarm (0);
  g_counting = false;
  if (g_detect_leaks && g_mallocs > g_frees && __lsan_do_recoverable_leak_check
      && __lsan_do_recoverable_leak_check ()) {
    dump_input ("leak");
    _exit (1);
  }
  g_cur_data = nullptr;
  g_cur_size = 0;
  RunResult res;
  res.rejected = r == -1;
  for (size_t i = 0; i < kMapSize; i += 8) {
    uint64_t word;
    memcpy (&word, g_hits + i, 8);
    if (!word)
      continue;
    for (size_t k = i; k < i + 8; k++) {
      if (!g_hits[k])
        continue;
      uint8_t b = bucket (g_hits[k]);
      if (b & ~g_virgin[k]) {
        g_virgin[k] |= b;
        res.new_coverage = true;
      }
    }
  }
  return res;
}

size_t
features ()
{
  size_t n = 0;
  for (uint8_t v : g_virgin)
    n += (size_t)__builtin_popcount (v);
  return n;
}

bool
is_dir (const std::string &p)
{
  struct stat st;
  return stat (p.c_str (), &st) == 0 && S_ISDIR (st.st_mode);
}

// Regular files of a directory, sorted by name (a fixed order: the same
// pool, hence the same mutations, on every machine).
std::vector<std::string>
list_dir (const std::string &dir)
{
  std::vector<std::string> out;
  if (DIR *d = opendir (dir.c_str ())) {
    while (dirent *e = readdir (d)) {
      std::string p = dir + "/" + e->d_name;
      struct stat st;
      if (e->d_name[0] != '.' && stat (p.c_str (), &st) == 0 && S_ISREG (st.st_mode))
        out.push_back (p);
    }
    closedir (d);
  }
  std::sort (out.begin (), out.end ());
  return out;
}

bool
flag (const char *arg, const char *name, std::string &value)
{
  size_t n = strlen (name);
  if (strncmp (arg, name, n) != 0 || arg[n] != '=')
    return false;
  value = arg + n + 1;
  return true;
}

double
seconds_since (std::chrono::steady_clock::time_point t0)
{
  return std::chrono::duration<double> (std::chrono::steady_clock::now () - t0).count ();
}

} // namespace

// Long by nature: the driver read top to bottom (its options, one loop per target in
// the order the targets are listed, the summary).
int
main (int argc, char **argv)
{
  uint64_t seed = 1;
  uint64_t runs = 10000;
  double max_total_time = 0;
  size_t max_len = 4096;
  std::vector<std::string> dict_paths, paths;
  std::string save_new;
  for (int i = 1; i < argc; i++) {
    std::string v;
    if (flag (argv[i], "-seed", v))
      seed = strtoull (v.c_str (), nullptr, 10);
    else if (flag (argv[i], "-runs", v))
      runs = strtoull (v.c_str (), nullptr, 10);
    else if (flag (argv[i], "-max_total_time", v))
      max_total_time = strtod (v.c_str (), nullptr);
    else if (flag (argv[i], "-max_len", v))
      max_len = std::max<size_t> (1, strtoull (v.c_str (), nullptr, 10));
    else if (flag (argv[i], "-dict", v))
      dict_paths.push_back (v);
    else if (flag (argv[i], "-timeout", v))
      g_timeout_s = std::max (1, atoi (v.c_str ()));
    else if (flag (argv[i], "-artifact_prefix", v))
      snprintf (g_artifact_prefix, sizeof g_artifact_prefix, "%s", v.c_str ());
    else if (flag (argv[i], "-save_new", v))
      save_new = v;
    else if (flag (argv[i], "-detect_leaks", v))
      g_detect_leaks = atoi (v.c_str ()) != 0;
    else if (argv[i][0] == '-') {
      fprintf (stderr,
               "usage: %s [-seed=N] [-runs=N] [-max_total_time=S] "
               "[-max_len=N] [-dict=FILE]... [-timeout=S] "
               "[-artifact_prefix=P] [-save_new=DIR] [-detect_leaks=0|1] "
               "CORPUS_DIR...|FILE...\n",
               argv[0]);
      return 2;
    } else
      paths.push_back (argv[i]);
  }
  char exe[sizeof g_exe];
  ssize_t n = readlink ("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = 0;
    snprintf (g_exe, sizeof g_exe, "%s", exe);
  }
  const char *name = strrchr (argv[0], '/') ? strrchr (argv[0], '/') + 1 : argv[0];

  if (LLVMFuzzerInitialize)
    LLVMFuzzerInitialize (&argc, &argv);
  install_handlers ();
  if (__sanitizer_install_malloc_and_free_hooks)
    __sanitizer_install_malloc_and_free_hooks (on_malloc, on_free);
  setvbuf (stdout, nullptr, _IOLBF, 0);

  std::vector<Bytes> dict;
  for (const auto &p : dict_paths)
    if (!load_dict (p, dict)) {
      fprintf (stderr, "%s: cannot read the dictionary %s\n", name, p.c_str ());
      return 2;
    }

  // Files alone: replay them (a crash, a hang, a regression input).
  std::vector<std::string> files, dirs;
  for (const auto &p : paths)
    (is_dir (p) ? dirs : files).push_back (p);
  if (!files.empty () && dirs.empty ()) {
    for (const auto &f : files) {
      Bytes in;
      if (!read_file (f, in)) {
        fprintf (stderr, "%s: cannot read %s\n", name, f.c_str ());
        return 2;
      }
      printf ("%s: replaying %s (%zu bytes)\n", name, f.c_str (), in.size ());
      g_replaying = f.c_str ();
      run_one (in, (unsigned)g_timeout_s);
      g_replaying = nullptr;
    }
    printf ("%s: %zu input(s) ran without a crash or a broken contract\n", name, files.size ());
    return 0;
  }

  auto t0 = std::chrono::steady_clock::now ();
  Pool pool;
  pool.inputs.push_back ({}); // the empty input first, as libFuzzer does
  run_one (pool.inputs.back (), (unsigned)g_timeout_s);
  size_t seeds = 0;
  for (const auto &f : files)
    dirs.push_back (f); // mixed: files count as corpus too
  for (const auto &d : dirs) {
    std::vector<std::string> entries = is_dir (d) ? list_dir (d) : std::vector<std::string>{d};
    if (is_dir (d) && entries.empty ())
      fprintf (stderr, "%s: warning: the corpus %s is empty\n", name, d.c_str ());
    for (const auto &f : entries) {
      Bytes in;
      if (!read_file (f, in)) {
        fprintf (stderr, "%s: cannot read %s\n", name, f.c_str ());
        return 2;
      }
      RunResult r = run_one (in, (unsigned)g_timeout_s);
      seeds++;
      if (!r.rejected)
        pool.inputs.push_back (std::move (in));
    }
  }
  double corpus_s = seconds_since (t0);
  printf ("%s: %zu corpus input(s) ran in %.2f s; %zu coverage features; "
          "%zu dictionary tokens; seed %" PRIu64 ", max_len %zu\n",
          name, seeds, corpus_s, features (), dict.size (), seed, max_len);

  Mutator mutator (seed, max_len, std::move (dict));
  size_t found = 0;
  uint64_t done = 0;
  bool capped = false;
  auto t1 = std::chrono::steady_clock::now ();
  uint64_t next_report = 1024;
  for (; done < runs; done++) {
    if (max_total_time > 0 && seconds_since (t1) >= max_total_time) {
      capped = true;
      break;
    }
    Rng &rng = mutator.rng ();
    // Mostly the pool's inputs, with a bias towards recent finds.
    size_t pick = rng.one_in (4) && pool.inputs.size () > 16 ? pool.inputs.size () - 1 - rng.below (16)
                                                             : rng.below (pool.inputs.size ());
    Bytes in = pool.inputs[pick];
    mutator.mutate (in, pool);
    RunResult r = run_one (in, (unsigned)g_timeout_s);
    if (r.new_coverage && !r.rejected && pool.inputs.size () < 100000) {
      found++;
      if (!save_new.empty ()) {
        char hex[17];
        snprintf (hex, sizeof hex, "%016" PRIx64, fnv1a (in.data (), in.size ()));
        std::string p = save_new + "/" + hex;
        if (FILE *f = fopen (p.c_str (), "wb")) {
          fwrite (in.data (), 1, in.size (), f);
          fclose (f);
        }
      }
      pool.inputs.push_back (std::move (in));
    }
    if (done + 1 == next_report) {
      double s = seconds_since (t1);
      printf ("%s: #%" PRIu64 " %.1f s, %zu features, pool %zu, %.0f/s\n", name, done + 1, s, features (),
              pool.inputs.size (), s > 0 ? (double)(done + 1) / s : 0.0);
      next_report *= 4;
    }
  }
  double s = seconds_since (t1);
  printf ("%s: done: %" PRIu64 " of %" PRIu64 " mutation runs in %.1f s "
          "(%.0f/s)%s; %zu inputs with new coverage; %zu coverage features; "
          "no crash, no broken contract\n",
          name, done, runs, s, s > 0 ? (double)done / s : 0.0, capped ? ", stopped by -max_total_time" : "",
          found, features ());
  return 0;
}
