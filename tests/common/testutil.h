// Helpers shared by the LiveMicro tests.
#pragma once

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <glib.h>
#include <glib/gstdio.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace livemicro::test {

// Debian's Chromium, headless, with a throwaway profile, opening `url`:
// the command line every browser test and benchmark starts it with
// (`extra` goes before the URL).
constexpr const char *kChromium = "/usr/bin/chromium";
inline std::vector<std::string>
headless_chromium_args (const std::string &profile_dir, const std::string &url,
                        const std::vector<std::string> &extra = {})
{
  std::vector<std::string> args = {kChromium,
                                   "--headless=new",
                                   "--no-sandbox",
                                   "--disable-gpu",
                                   "--disable-quic",
                                   "--no-first-run",
                                   "--disable-background-networking",
                                   "--disable-component-update",
                                   "--disable-sync",
                                   "--autoplay-policy=no-user-gesture-required",
                                   "--user-data-dir=" + profile_dir};
  args.insert (args.end (), extra.begin (), extra.end ());
  args.push_back (url);
  return args;
}

// The shared H&E test images (../shared/testdata), or "" when absent.
inline std::string
testdata_dir ()
{
  const char *env = std::getenv ("LIVEMICRO_TESTDATA");
  std::string dir = env ? env : "";
  if (!dir.empty () && g_file_test ((dir + "/SOURCES.md").c_str (), G_FILE_TEST_EXISTS))
    return dir;
  return "";
}

#define LIVEMICRO_REQUIRE_TESTDATA(var)                                                                      \
  const std::string var = ::livemicro::test::testdata_dir ();                                                \
  if (var.empty ())                                                                                          \
  GTEST_SKIP () << "shared test data not found (set LIVEMICRO_TESTDATA or "                                  \
                   "put ../shared/testdata next to the source tree)"

// Focus measure: variance of the Laplacian of the grey image.
inline double
laplacian_variance (const cv::Mat &rgb)
{
  cv::Mat grey, lap;
  cv::cvtColor (rgb, grey, cv::COLOR_RGB2GRAY);
  cv::Laplacian (grey, lap, CV_64F);
  cv::Scalar mean, stddev;
  cv::meanStdDev (lap, mean, stddev);
  return stddev[0] * stddev[0];
}

// This process's resident memory (VmRSS in /proc/self/status), kB; -1
// where there is no /proc.
inline long
resident_kb ()
{
  std::ifstream status ("/proc/self/status");
  for (std::string line; std::getline (status, line);)
    if (line.rfind ("VmRSS:", 0) == 0)
      return std::atol (line.c_str () + 6);
  return -1;
}

// A fresh temporary directory, removed with its files by the destructor.
class TempDir {
public:
  TempDir ()
  {
    char *d = g_dir_make_tmp ("livemicro-test-XXXXXX", nullptr);
    path_ = d;
    g_free (d);
  }
  ~TempDir () { remove_tree (path_); }
  TempDir (const TempDir &) = delete;
  TempDir &operator= (const TempDir &) = delete;
  const std::string &path () const { return path_; }
  std::string file (const std::string &name) const { return path_ + "/" + name; }

private:
  static void remove_tree (const std::string &path)
  {
    if (GDir *dir = g_dir_open (path.c_str (), 0, nullptr)) {
      while (const char *name = g_dir_read_name (dir))
        remove_tree (path + "/" + name);
      g_dir_close (dir);
    }
    g_remove (path.c_str ());
  }
  std::string path_;
};

} // namespace livemicro::test
