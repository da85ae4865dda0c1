// `livemicroctl analyze` as a user runs it: summaries, JSON Lines, QuPath
// GeoJSON, and clear errors with a non-zero exit for bad input.
#include "testutil.h"

#include <gtest/gtest.h>
#include <json-glib/json-glib.h>
#include <opencv2/imgcodecs.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

using livemicro::test::TempDir;

namespace {

struct CtlRun {
  int status = -1;
  std::string out, err;
};

// Runs livemicroctl; `env` entries ("NAME=value") are added to this
// process's environment.
CtlRun
ctl (const std::vector<std::string> &args, const std::vector<std::string> &env = {})
{
  gchar **envp = g_get_environ ();
  for (const auto &kv : env) {
    size_t eq = kv.find ('=');
    envp = g_environ_setenv (envp, kv.substr (0, eq).c_str (), kv.substr (eq + 1).c_str (), TRUE);
  }
  std::vector<char *> argv;
  std::string exe = g_getenv ("LIVEMICROCTL") ? g_getenv ("LIVEMICROCTL") : "livemicroctl";
  argv.push_back (exe.data ());
  std::vector<std::string> copy = args;
  for (auto &a : copy)
    argv.push_back (a.data ());
  argv.push_back (nullptr);
  CtlRun r;
  gchar *out = nullptr, *err = nullptr;
  gint status = 0;
  GError *e = nullptr;
  const bool spawned = g_spawn_sync (nullptr, argv.data (), envp, G_SPAWN_DEFAULT, nullptr, nullptr, &out,
                                     &err, &status, &e);
  g_strfreev (envp);
  if (!spawned) {
    ADD_FAILURE () << e->message;
    g_error_free (e);
    return r;
  }
  r.status = WIFEXITED (status) ? WEXITSTATUS (status) : -1;
  r.out = out ? out : "";
  r.err = err ? err : "";
  g_free (out);
  g_free (err);
  return r;
}

} // namespace

TEST (LivemicroctlAnalyze, CorruptImageGivesAClearErrorAndNonZeroExit)
{
  LIVEMICRO_REQUIRE_TESTDATA (data);
  TempDir dir;
  // The first 3000 bytes of a real PNG: a truncated file.
  std::ifstream in (data + "/monuseg/TCGA-B0-5710-01Z-00-DX1.png", std::ios::binary);
  std::vector<char> head (3000);
  in.read (head.data (), head.size ());
  std::ofstream (dir.file ("cut.png"), std::ios::binary).write (head.data (), head.size ());
  std::ofstream (dir.file ("text.jpg")) << "not a picture\n";
  for (const char *name : {"cut.png", "text.jpg"}) {
    CtlRun r = ctl ({"analyze", dir.file (name), "--um-per-px", "0.25", "--json"});
    EXPECT_EQ (r.status, 1) << name;
    EXPECT_NE (r.err.find (dir.file (name)), std::string::npos) << r.err;
    EXPECT_NE (r.err.find ("cannot read"), std::string::npos) << r.err;
    EXPECT_EQ (r.out, "") << "nothing is reported for a file that could not be read";
  }
  CtlRun missing = ctl ({"analyze", dir.file ("none.png"), "--um-per-px", "0.25"});
  EXPECT_EQ (missing.status, 1);
  EXPECT_NE (missing.err.find ("does not exist"), std::string::npos) << missing.err;
  // A good image next to a bad one is still analysed; the exit says one failed.
  CtlRun both = ctl (
      {"analyze", dir.file ("cut.png"), data + "/tiles/stardist_histo.jpg", "--um-per-px", "0.5", "--json"});
  EXPECT_EQ (both.status, 1);
  EXPECT_NE (both.out.find ("stardist_histo.jpg"), std::string::npos);
}

TEST (LivemicroctlAnalyze, BadArgumentsAreRefused)
{
  EXPECT_EQ (ctl ({"analyze"}).status, 2);
  CtlRun r = ctl ({"analyze", "x.png", "--region", "1,2,3"});
  EXPECT_EQ (r.status, 2);
  EXPECT_NE (r.err.find ("--region"), std::string::npos) << r.err;
  EXPECT_EQ (ctl ({"analyze", "x.png", "--um-per-px", "-1"}).status, 2);
  for (const char *copies : {"0", "3", "16"}) {
    r = ctl ({"analyze", "x.png", "--tta", copies});
    EXPECT_EQ (r.status, 2);
    EXPECT_NE (r.err.find ("--tta"), std::string::npos) << r.err;
  }
}

TEST (LivemicroctlAnalyze, UncalibratedImageAsksForThePixelSize)
{
  LIVEMICRO_REQUIRE_TESTDATA (data);
  CtlRun r = ctl ({"analyze", data + "/tiles/stardist_histo.jpg"});
  EXPECT_EQ (r.status, 1);
  EXPECT_NE (r.err.find ("--um-per-px"), std::string::npos) << r.err;
}

// JSON Lines per image, and GeoJSON detections (QuPath) whose polygons sit
// where the JSON says the nuclei are.
TEST (LivemicroctlAnalyze, JsonAndGeoJsonDescribeTheSameNuclei)
{
  LIVEMICRO_REQUIRE_TESTDATA (data);
  TempDir dir;
  const std::string img = data + "/monuseg/TCGA-B0-5710-01Z-00-DX1.png";
  CtlRun j = ctl ({"analyze", img, "--um-per-px", "0.252", "--json", "--nuclei"});
  ASSERT_EQ (j.status, 0) << j.err;
  g_autoptr (JsonParser) p = json_parser_new ();
  ASSERT_TRUE (json_parser_load_from_data (p, j.out.c_str (), -1, nullptr));
  JsonObject *o = json_node_get_object (json_parser_get_root (p));
  EXPECT_STREQ (json_object_get_string_member (o, "quality"), "ok");
  const gint64 count = json_object_get_int_member (o, "nuclei_count");
  EXPECT_GT (count, 250); // 359 annotated nuclei
  EXPECT_LT (count, 450);
  JsonArray *nuclei = json_object_get_array_member (o, "nuclei");
  ASSERT_EQ ((gint64)json_array_get_length (nuclei), count);

  CtlRun g = ctl ({"analyze", img, "--um-per-px", "0.252", "--geojson", dir.file ("n.geojson")});
  ASSERT_EQ (g.status, 0) << g.err;
  g_autoptr (JsonParser) gp = json_parser_new ();
  ASSERT_TRUE (json_parser_load_from_file (gp, dir.file ("n.geojson").c_str (), nullptr));
  JsonObject *fc = json_node_get_object (json_parser_get_root (gp));
  EXPECT_STREQ (json_object_get_string_member (fc, "type"), "FeatureCollection");
  JsonArray *features = json_object_get_array_member (fc, "features");
  ASSERT_GE ((gint64)json_array_get_length (features), count - 3);
  JsonObject *f0 = json_array_get_object_element (features, 0);
  JsonObject *props = json_object_get_object_member (f0, "properties");
  EXPECT_STREQ (json_object_get_string_member (props, "objectType"), "detection");
  JsonObject *meas = json_object_get_object_member (props, "measurements");
  // QuPath's names and units (µm as QuPath writes it); QuPath computes centroids itself.
  EXPECT_GT (json_object_get_double_member (meas, "Nucleus: Area µm^2"), 0);
  EXPECT_GT (json_object_get_double_member (meas, "Nucleus: Perimeter µm"), 0);
  EXPECT_GT (json_object_get_double_member (meas, "Nucleus: Circularity"), 0);
  EXPECT_TRUE (json_object_has_member (meas, "Nucleus: Hematoxylin OD mean"));
  EXPECT_FALSE (json_object_has_member (meas, "Centroid X px"));
  // A stable UUID per detection: the same analysis gives the same ids.
  const std::string id0 = json_object_get_string_member (f0, "id");
  EXPECT_TRUE (g_regex_match_simple ("^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
                                     id0.c_str (), (GRegexCompileFlags)0, (GRegexMatchFlags)0))
      << id0;
  EXPECT_NE (id0, json_object_get_string_member (json_array_get_object_element (features, 1), "id"));
  CtlRun again = ctl ({"analyze", img, "--um-per-px", "0.252", "--geojson", dir.file ("again.geojson")});
  ASSERT_EQ (again.status, 0) << again.err;
  g_autoptr (JsonParser) ap = json_parser_new ();
  ASSERT_TRUE (json_parser_load_from_file (ap, dir.file ("again.geojson").c_str (), nullptr));
  EXPECT_EQ (
      id0,
      json_object_get_string_member (
          json_array_get_object_element (
              json_object_get_array_member (json_node_get_object (json_parser_get_root (ap)), "features"), 0),
          "id"));
  JsonObject *cls = json_object_get_object_member (props, "classification");
  EXPECT_EQ (json_array_get_length (json_object_get_array_member (cls, "color")), 3u);
  JsonArray *ring = json_array_get_array_element (
      json_object_get_array_member (json_object_get_object_member (f0, "geometry"), "coordinates"), 0);
  ASSERT_GE (json_array_get_length (ring), 4u);
  // Closed ring whose centre is the centroid the measurements give.
  JsonArray *first = json_array_get_array_element (ring, 0);
  JsonArray *last = json_array_get_array_element (ring, json_array_get_length (ring) - 1);
  EXPECT_DOUBLE_EQ (json_array_get_double_element (first, 0), json_array_get_double_element (last, 0));
  // Its centre is a nucleus' centre the --json output gives.
  double cx = 0, cy = 0;
  for (guint k = 0; k + 1 < json_array_get_length (ring); k++) {
    cx += json_array_get_double_element (json_array_get_array_element (ring, k), 0);
    cy += json_array_get_double_element (json_array_get_array_element (ring, k), 1);
  }
  cx /= json_array_get_length (ring) - 1;
  cy /= json_array_get_length (ring) - 1;
  double nearest = 1e9;
  for (guint k = 0; k < json_array_get_length (nuclei); k++) {
    JsonObject *n = json_array_get_object_element (nuclei, k);
    nearest = std::min (nearest, std::hypot (json_object_get_double_member (n, "x_px") - cx,
                                             json_object_get_double_member (n, "y_px") - cy));
  }
  EXPECT_LT (nearest, 6.0);
}

// A region of a whole-slide image through OpenSlide, µm/px from the file;
// the detections are placed in level-0 pixels (region offset added).
TEST (LivemicroctlAnalyze, WholeSlideRegion)
{
  LIVEMICRO_REQUIRE_TESTDATA (data);
  TempDir dir;
  const std::string wsi = data + "/wsi/TCGA-B0-5710_pyramid_DERIVED.tif";
  CtlRun j = ctl ({"analyze", wsi, "--region", "500,400,400,300", "--json"});
  ASSERT_EQ (j.status, 0) << j.err;
  g_autoptr (JsonParser) p = json_parser_new ();
  ASSERT_TRUE (json_parser_load_from_data (p, j.out.c_str (), -1, nullptr));
  JsonObject *o = json_node_get_object (json_parser_get_root (p));
  EXPECT_STREQ (json_object_get_string_member (o, "quality"), "ok");
  EXPECT_EQ (json_object_get_int_member (o, "frame_width"), 400);
  EXPECT_NEAR (json_object_get_double_member (o, "um_per_px"), 0.252, 0.01);
  EXPECT_GT (json_object_get_int_member (o, "nuclei_count"), 10);
  CtlRun g = ctl ({"analyze", wsi, "--region", "500,400,400,300", "--geojson", dir.file ("w.geojson")});
  ASSERT_EQ (g.status, 0) << g.err;
  g_autoptr (JsonParser) gp = json_parser_new ();
  ASSERT_TRUE (json_parser_load_from_file (gp, dir.file ("w.geojson").c_str (), nullptr));
  JsonArray *features
      = json_object_get_array_member (json_node_get_object (json_parser_get_root (gp)), "features");
  ASSERT_GT (json_array_get_length (features), 0u);
  JsonObject *meas = json_object_get_object_member (
      json_object_get_object_member (json_array_get_object_element (features, 0), "properties"),
      "measurements");
  EXPECT_GT (json_object_get_double_member (meas, "Nucleus: Area µm^2"), 0);
  JsonArray *first = json_array_get_array_element (
      json_array_get_array_element (
          json_object_get_array_member (
              json_object_get_object_member (json_array_get_object_element (features, 0), "geometry"),
              "coordinates"),
          0),
      0);
  const double x = json_array_get_double_element (first, 0);
  EXPECT_GE (x, 500) << "level-0 pixels, the region's offset added";
  EXPECT_LE (x, 900);
  // Outside the slide: refused with the image size in the message.
  CtlRun out = ctl ({"analyze", wsi, "--region", "900,900,400,300"});
  EXPECT_EQ (out.status, 1);
  EXPECT_NE (out.err.find ("outside the image"), std::string::npos) << out.err;
}

// livemicroctl analyses with the nucleus model when it finds one
// ($LIVEMICRO_NUCLEI_MODEL here, the installed copy otherwise) and with the
// classical method when it does not: both give a full report, and they
// differ, so the model is really the one used.
TEST (LivemicroctlAnalyze, UsesTheNucleusModelWhenItIsThere)
{
  LIVEMICRO_REQUIRE_TESTDATA (data);
  const char *model = g_getenv ("LIVEMICRO_NUCLEI_MODEL");
  ASSERT_NE (model, nullptr) << "the tests set LIVEMICRO_NUCLEI_MODEL (tests/meson.build)";
  const std::string img = data + "/monuseg/TCGA-B0-5710-01Z-00-DX1.png";
  auto nuclei = [&] (const std::string &model_file, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"analyze", img, "--um-per-px", "0.252", "--json", "--nuclei"};
    args.insert (args.end (), extra.begin (), extra.end ());
    CtlRun r = ctl (args, {"LIVEMICRO_NUCLEI_MODEL=" + model_file});
    EXPECT_EQ (r.status, 0) << r.err;
    std::vector<double> areas;
    g_autoptr (JsonParser) p = json_parser_new ();
    if (!json_parser_load_from_data (p, r.out.c_str (), -1, nullptr)) {
      ADD_FAILURE () << r.out;
      return areas;
    }
    JsonObject *o = json_node_get_object (json_parser_get_root (p));
    EXPECT_STREQ (json_object_get_string_member (o, "quality"), "ok");
    JsonArray *a = json_object_get_array_member (o, "nuclei");
    for (guint k = 0; k < json_array_get_length (a); k++)
      areas.push_back (json_object_get_double_member (json_array_get_object_element (a, k), "area_um2"));
    return areas;
  };
  std::vector<double> with_model = nuclei (model), classical = nuclei ("/nonexistent/nuclei.onnx");
  EXPECT_GT (with_model.size (), 250u); // 359 annotated nuclei
  EXPECT_GT (classical.size (), 250u);
  EXPECT_NE (with_model, classical);
  EXPECT_EQ (with_model, nuclei (model)) << "the same image gives the same nuclei";
  // --tta 8: the model's maps averaged over the eight flips and rotations
  // of the image; other nuclei, about as many.
  std::vector<double> averaged = nuclei (model, {"--tta", "8"});
  EXPECT_NE (averaged, with_model);
  EXPECT_NEAR ((double)averaged.size (), (double)with_model.size (), 0.1 * with_model.size ());
  EXPECT_EQ (averaged, nuclei (model, {"--tta", "8"})) << "deterministic";
}
