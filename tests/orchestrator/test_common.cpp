// The orchestrator's plain parts: H.264 capture-time SEI, credentials, the
// SQLite store, the configuration file, pipeline templates, the QuPath
// GeoJSON writer, the JSON writer, viewers' timestamps from capture times, WHEP offers, the
// worker's ledger of frame records and the RTSP service's pacing.
#include "capture_ledger.h"
#include "common/h264.h"
#include "common/json_writer.h"
#include "common/qupath_geojson.h"
#include "common/store.h"
#include "common/tokens.h"
#include "common/worker_protocol.h"
#include "config.h"
#include "requests.h"
#include "rtsp_service.h"
#include "templates.h"
#include "view_stream.h"
#include "testutil.h"

#include <gst/app/gstappsink.h>
#include <gst/video/video.h>
#include <gtest/gtest.h>
#include <json-glib/json-glib.h>
#include <sqlite3.h>

#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <thread>

using namespace livemicro::orchestrator;
using livemicro::test::TempDir;
TEST (H264, CaptureTimeSurvivesTheStreamIncludingEmulationPrevention)
{
  // SPS, PPS, IDR slice: the SEI goes in before the slice.
  const uint8_t au[] = {0,    0,    0,    1,    0x67, 0x42, 0xc0, 0x1f, 0,    0,    0,    1,
                        0x68, 0xce, 0x3c, 0x80, 0,    0,    1,    0x65, 0x88, 0x84, 0x00, 0x33};
  // Values whose bytes contain 00 00 0x sequences need escaping.
  for (int64_t t : {int64_t (1795367801658453), int64_t (0x0000000100000002), int64_t (3)}) {
    auto out = h264::with_capture_time (au, sizeof au, t);
    auto nals = h264::nal_units (out.data (), out.size ());
    ASSERT_EQ (nals.size (), 4u);
    EXPECT_EQ (nals[0].type, h264::kSps);
    EXPECT_EQ (nals[1].type, h264::kPps);
    EXPECT_EQ (nals[2].type, h264::kSei);
    EXPECT_EQ (nals[3].type, h264::kIdr);
    // No start code emulation inside the SEI.
    for (size_t i = nals[2].payload; i + 2 < nals[2].end; i++)
      EXPECT_FALSE (out[i] == 0 && out[i + 1] == 0 && out[i + 2] <= 2) << "at " << i;
    auto back = h264::capture_time (out.data (), out.size ());
    ASSERT_TRUE (back.has_value ());
    EXPECT_EQ (*back, t);
  }
  EXPECT_FALSE (h264::capture_time (au, sizeof au).has_value ());
  // The stage position rides along.
  livemicro::hw::FrameRecord in;
  in.capture_unix_us = 123456789;
  in.stage_x_um = 47000.125;
  in.stage_y_um = -0.5;
  in.stage_z_um = 1003.25;
  in.um_per_px = 0.25;
  in.objective = 40;
  in.moving = true;
  auto out = h264::with_frame_record (au, sizeof au, in);
  auto info = h264::frame_record (out.data (), out.size ());
  ASSERT_TRUE (info.has_value ());
  EXPECT_EQ (info->capture_unix_us, 123456789);
  EXPECT_DOUBLE_EQ (info->stage_x_um, 47000.125);
  EXPECT_DOUBLE_EQ (info->stage_y_um, -0.5);
  EXPECT_DOUBLE_EQ (info->stage_z_um, 1003.25);
  EXPECT_DOUBLE_EQ (info->um_per_px, 0.25);
  EXPECT_EQ (info->objective, 40u);
  EXPECT_TRUE (info->moving);
  auto ps = h264::parameter_sets (au, sizeof au);
  EXPECT_EQ (h264::nal_units (ps.data (), ps.size ()).size (), 2u);
}

TEST (Tokens, RandomEnoughAndHashedAsStandardsSay)
{
  std::set<std::string> seen;
  for (int i = 0; i < 1000; i++) {
    std::string t = random_token (32);
    EXPECT_EQ (t.size (), 43u); // 256 bits, base64url
    EXPECT_EQ (t.find_first_of ("+/="), std::string::npos);
    EXPECT_TRUE (seen.insert (t).second);
  }
  EXPECT_EQ (random_id ().size (), 32u);
  EXPECT_EQ (sha256_hex ("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // RFC 2617's example.
  EXPECT_EQ (digest_ha1 ("Mufasa", "testrealm@host.com", "Circle Of Life"),
             "939e7578ed9e3c518a452acee763bce9");
  EXPECT_TRUE (constant_time_equal ("abc", "abc"));
  EXPECT_FALSE (constant_time_equal ("abc", "abd"));
  EXPECT_FALSE (constant_time_equal ("abc", "abcd"));
}

TEST (Store, SessionsPersistInWalAndTheAuditIsAppendOnly)
{
  TempDir dir;
  std::string path = dir.file ("state.db");
  SessionRecord s{"id1", "alice", "consultant", "demo", sha256_hex ("tok"), "ha1", 42};
  {
    Store st (path);
    st.insert_session (s);
    st.append_audit ({0, 0, "admin", "admin", "", "demo", "session.start", "id1", "ok"});
    EXPECT_THROW (st.insert_session (s), StoreError) << "ids are unique";
  }
  Store st (path);
  auto back = st.session_by_token_sha256 (sha256_hex ("tok"));
  ASSERT_TRUE (back.has_value ());
  EXPECT_EQ (back->user, "alice");
  EXPECT_EQ (st.sessions ("demo").size (), 1u);
  EXPECT_TRUE (st.end_session ("id1"));
  EXPECT_FALSE (st.end_session ("id1"));
  EXPECT_FALSE (st.session ("id1").has_value ());
  EXPECT_EQ (st.audit ().size (), 1u);

  sqlite3 *db = nullptr;
  ASSERT_EQ (sqlite3_open (path.c_str (), &db), SQLITE_OK);
  sqlite3_stmt *q = nullptr;
  sqlite3_prepare_v2 (db, "PRAGMA journal_mode", -1, &q, nullptr);
  ASSERT_EQ (sqlite3_step (q), SQLITE_ROW);
  EXPECT_STREQ (reinterpret_cast<const char *> (sqlite3_column_text (q, 0)), "wal");
  sqlite3_finalize (q);
  char *err = nullptr;
  EXPECT_NE (sqlite3_exec (db, "DELETE FROM audit", nullptr, nullptr, &err), SQLITE_OK);
  sqlite3_free (err);
  EXPECT_NE (sqlite3_exec (db, "UPDATE audit SET result='x'", nullptr, nullptr, &err), SQLITE_OK);
  sqlite3_free (err);
  sqlite3_close (db);
  EXPECT_EQ (st.audit ().size (), 1u);
}

TEST (Store, UnwritablePathIsAClearError)
{
  try {
    Store st ("/nonexistent/dir/state.db");
    FAIL () << "opened an impossible path";
  } catch (const StoreError &e) {
    EXPECT_NE (std::string (e.what ()).find ("/nonexistent/dir/state.db"), std::string::npos);
  }
}

namespace {

std::string
config_error (const std::string &json)
{
  TempDir dir;
  std::string path = dir.file ("c.json");
  std::ofstream (path) << json;
  try {
    Config::load (path);
  } catch (const ConfigError &e) {
    return e.what ();
  }
  return "(accepted)";
}

} // namespace

TEST (Config, ValidFileLoadsAndMistakesNameTheKey)
{
  TempDir dir;
  std::string path = dir.file ("c.json");
  std::ofstream (path) << R"({"http_port": 9000, "video": {"width": 640, "height": 360},
      "microscopes": [{"id": "a", "uri": "sim://synthetic"}, {"id": "b", "uri": "sim://synthetic?seed=2"}],
      "users": [{"name": "alice", "roles": ["owner", "consultant"]}]})";
  Config c = Config::load (path);
  EXPECT_EQ (c.http_port, 9000);
  EXPECT_EQ (c.video.width, 640);
  EXPECT_EQ (c.microscopes.size (), 2u);
  EXPECT_EQ (c.users[0].roles.size (), 2u);

  EXPECT_NE (config_error ("{").find ("c.json"), std::string::npos);
  EXPECT_NE (config_error (R"({"microscopes": []})").find ("at least one microscope"), std::string::npos);
  EXPECT_NE (config_error (R"({"htp_port": 1, "microscopes": [{"id":"a","uri":"sim://synthetic"}]})")
                 .find ("htp_port: unknown key"),
             std::string::npos);
  EXPECT_NE (config_error (R"({"http_port": "80", "microscopes": [{"id":"a","uri":"sim://synthetic"}]})")
                 .find ("http_port: expected an integer"),
             std::string::npos);
  EXPECT_NE (config_error (R"({"microscopes": [{"id":"a b","uri":"x"}]})").find ("id: 'a b'"),
             std::string::npos);
  EXPECT_NE (
      config_error (R"({"microscopes": [{"id":"a","uri":"x"},{"id":"a","uri":"y"}]})").find ("used twice"),
      std::string::npos);
  EXPECT_NE (
      config_error (R"({"video": {"width": 641}, "microscopes": [{"id":"a","uri":"x"}]})").find ("even"),
      std::string::npos);
  EXPECT_NE (
      config_error (R"({"users": [{"name":"x","roles":["king"]}], "microscopes": [{"id":"a","uri":"x"}]})")
          .find ("roles[0]"),
      std::string::npos);
}

TEST (Config, AnEdgeCloudSectionOrCommandLineIsCheckedKeyByKey)
{
  TempDir dir;
  std::string path = dir.file ("c.json");
  // A node of an edge cloud may have no microscope of its own.
  std::ofstream (path)
      << R"({"cluster": {"etcd": ["http://10.0.0.1:2379", "https://e2:2379/"], "node": "edge-1",
      "site": "lab", "lease_ttl_s": 3}, "microscopes": []})";
  Config c = Config::load (path);
  ASSERT_TRUE (c.cluster.enabled ());
  EXPECT_EQ (c.cluster.etcd.size (), 2u);
  EXPECT_EQ (c.cluster.node, "edge-1");
  EXPECT_EQ (c.cluster.lease_ttl_s, 3);
  EXPECT_TRUE (c.microscopes.empty ());
  EXPECT_FALSE (Config::demo ().cluster.enabled ());

  auto err = [&] (const std::string &cluster) {
    return config_error (R"({"cluster": )" + cluster
                         + R"(, "microscopes": [{"id":"a","uri":"sim://synthetic"}]})");
  };
  EXPECT_NE (err (R"({"etcd": []})").find ("cluster.etcd: a list of etcd endpoints is needed"),
             std::string::npos);
  EXPECT_NE (err (R"({"etcd": ["ftp://x:1"]})").find ("cluster.etcd[0]: 'ftp://x:1' is not an etcd endpoint"),
             std::string::npos);
  EXPECT_NE (err (R"({"etcd": ["http://x:1/v3/kv"]})").find ("is not an etcd endpoint"), std::string::npos);
  EXPECT_NE (err (R"({"etcd": [2379]})").find ("cluster.etcd[0]: expected a string"), std::string::npos);
  EXPECT_NE (err (R"({"etcd": ["http://x:1"], "node": "a/b"})").find ("cluster.node: 'a/b'"),
             std::string::npos);
  EXPECT_NE (err (R"({"etcd": ["http://x:1"], "lease_ttl_s": 0})").find ("lease_ttl_s: 0 is outside [1, 60]"),
             std::string::npos);
  EXPECT_NE (err (R"({"etcd": ["http://x:1"], "ttl": 2})").find ("cluster.ttl: unknown key"),
             std::string::npos);
  EXPECT_NE (err (R"({"etcd": ["http://x:1"], "prefix": "lm"})").find ("prefix: must start with '/'"),
             std::string::npos);

  // The command line's --cluster and --node-name.
  Config cli = Config::demo ();
  cli.set_cluster_endpoints ("etcd=http://127.0.0.1:2379,http://127.0.0.1:2479");
  EXPECT_EQ (cli.cluster.etcd, (std::vector<std::string>{"http://127.0.0.1:2379", "http://127.0.0.1:2479"}));
  for (const char *bad :
       {"", "etcd=", "http://127.0.0.1:2379", "etcd=http://a:1,,http://b:2", "etcd=127.0.0.1:2379"})
    EXPECT_THROW (cli.set_cluster_endpoints (bad), ConfigError) << bad;
  EXPECT_THROW (cli.set_node_name ("no spaces"), ConfigError);
  EXPECT_EQ (cli.cluster.etcd.size (), 2u) << "a refused argument changes nothing";
}

// Recordings and WHEP's CORS origins: read as given, mistakes named.
TEST (Config, RecordingsAndCorsOriginsAreCheckedAndNamed)
{
  Config c = Config::parse (R"({"recordings": {"directory": "/srv/rec", "segment_s": 10},
      "cors": {"allowed_origins": ["https://player.example:8443", "http://localhost:3000"]},
      "microscopes": [{"id": "a", "uri": "sim://synthetic"}]})",
                            "c.json");
  EXPECT_EQ (c.recordings.directory, "/srv/rec");
  EXPECT_EQ (c.recordings.segment_s, 10);
  EXPECT_TRUE (c.cors.allows ("https://player.example:8443"));
  EXPECT_TRUE (c.cors.allows ("http://localhost:3000"));
  EXPECT_FALSE (c.cors.allows ("https://player.example")) << "another port is another origin";
  EXPECT_FALSE (c.cors.allows ("null"));
  EXPECT_FALSE (c.cors.allows (""));
  EXPECT_FALSE (Config::demo ().cors.allows ("https://player.example:8443")) << "no origin by default";
  const std::string m = R"("microscopes": [{"id":"a","uri":"x"}])";
  EXPECT_NE (config_error (R"({"recordings": {"segment_s": 0}, )" + m + "}").find ("recordings.segment_s"),
             std::string::npos);
  EXPECT_NE (config_error (R"({"recordings": {"dir": "x"}, )" + m + "}").find ("recordings.dir: unknown key"),
             std::string::npos);
  for (const char *bad : {R"("https://a.example/path")", R"("a.example")", R"("ftp://a.example")", "3"})
    EXPECT_NE (config_error (std::string (R"({"cors": {"allowed_origins": [)") + bad + "]}, " + m + "}")
                   .find ("cors.allowed_origins[0]: not an origin"),
               std::string::npos)
        << bad;
}

TEST (Config, RtspClientThreadsAreBoundedAndNeverOnePerConnection)
{
  auto with = [] (const std::string &rtsp) {
    return R"({"rtsp": )" + rtsp + R"(, "microscopes": [{"id":"a","uri":"x"}]})";
  };
  EXPECT_EQ (Config::parse (R"({"microscopes": [{"id":"a","uri":"x"}]})", "c.json").rtsp.client_threads, 2);
  EXPECT_EQ (Config::parse (with (R"({"client_threads": 0})"), "c.json").rtsp.client_threads, 0);
  EXPECT_EQ (Config::parse (with (R"({"client_threads": 8})"), "c.json").rtsp.client_threads, 8);
  // -1 would be gst-rtsp-server's "a thread per connection".
  EXPECT_NE (
      config_error (with (R"({"client_threads": -1})")).find ("rtsp.client_threads: -1 is outside [0, 64]"),
      std::string::npos);
  EXPECT_NE (config_error (with (R"({"client_threads": 65})")).find ("rtsp.client_threads"),
             std::string::npos);
  EXPECT_NE (config_error (with (R"({"client_threads": "2"})")).find ("expected an integer"),
             std::string::npos);
  EXPECT_NE (config_error (with (R"({"threads": 2})")).find ("rtsp.threads: unknown key"), std::string::npos);
}

TEST (Config, AMicroscopeMadeOfPartsBecomesACompositeUri)
{
  TempDir dir;
  std::string path = dir.file ("c.json");
  std::ofstream (path)
      << R"({"microscopes": [{"id": "lab", "camera": "aravis://Basler-1?exposure_us=800&gain=2",
      "stage": "grbl:///dev/ttyUSB0?baud=115200&x_offset_um=2000", "focus": "grbl:///dev/ttyUSB0?baud=115200&x_offset_um=2000",
      "objectives": [{"magnification": 10, "um_per_px": 0.69}, {"magnification": 40, "um_per_px": 0.17, "numerical_aperture": 0.65}],
      "objective": 40}, {"id": "sim", "uri": "sim://synthetic"}]})";
  Config c = Config::load (path);
  const MicroscopeConfig &m = c.microscopes[0];
  EXPECT_EQ (m.uri, "compose:?camera=aravis://Basler-1?exposure_us=800%26gain=2"
                    "&stage=grbl:///dev/ttyUSB0?baud=115200%26x_offset_um=2000"
                    "&focus=grbl:///dev/ttyUSB0?baud=115200%26x_offset_um=2000"
                    "&objectives=10:0.69,40:0.17:0.65&objective=40");
  EXPECT_EQ (m.capture_template, "capture-camera");
  EXPECT_EQ (c.microscopes[1].capture_template, "capture");

  EXPECT_NE (
      config_error (R"({"microscopes": [{"id":"a","uri":"sim://synthetic","camera":"aravis://Fake_1"}]})")
          .find ("either uri or camera"),
      std::string::npos);
  EXPECT_NE (config_error (R"({"microscopes": [{"id":"a","stage":"grbl:///dev/ttyUSB0"}]})")
                 .find ("camera: a microscope made of parts needs a camera"),
             std::string::npos);
  EXPECT_NE (
      config_error (
          R"({"microscopes": [{"id":"a","camera":"aravis://Fake_1","objectives":[{"magnification":10}]}]})")
          .find ("objectives[0].um_per_px: needed"),
      std::string::npos);
  EXPECT_NE (
      config_error (
          R"({"microscopes": [{"id":"a","camera":"aravis://Fake_1","objectives":[{"magnification":10,"um_per_px":"x"}]}]})")
          .find ("um_per_px: expected a number"),
      std::string::npos);
  EXPECT_NE (
      config_error (
          R"({"microscopes": [{"id":"a","camera":"aravis://Fake_1","objective":20,"objectives":[{"magnification":10,"um_per_px":1}]}]})")
          .find ("objective: 20 is not in objectives"),
      std::string::npos);
}

// Found by tests/fuzz (fuzz-config): a role that is not a string was a
// json-glib critical; half a surrogate pair gave a name that is not UTF-8
// (and two leak in json-glib); deep nesting overflows json-glib's stack.
TEST (Config, RolesOfAnyTypeHalfSurrogatesAndDeepNestingAreErrors)
{
  auto error = [] (const std::string &json) {
    try {
      Config::parse (json, "c.json");
    } catch (const ConfigError &e) {
      return std::string (e.what ());
    }
    return std::string ("(accepted)");
  };
  EXPECT_NE (error (R"({"microscopes": [{"id":"a","uri":"x"}], "users": [{"name":"u","roles":[{"a":1}]}]})")
                 .find ("users[0].roles[0]: not one of owner"),
             std::string::npos);
  EXPECT_NE (error (R"({"microscopes": [{"id":"a","uri":"x"}], "users": [{"name":"u","roles":[["owner"]]}]})")
                 .find ("roles[0]"),
             std::string::npos);
  EXPECT_NE (error ("{\"microscopes\": [{\"id\":\"a\",\n\"uri\":\"x\",\"name\":\"dr\\ud800ive\"}]}")
                 .find ("config 'c.json': line 2: a \\u escape of half a surrogate pair"),
             std::string::npos);
  EXPECT_NE (error (R"({"users": [{"name": "\udc00\udc00"}]})").find ("half a surrogate pair"),
             std::string::npos);
  EXPECT_EQ (Config::parse (R"({"microscopes": [{"id":"a","uri":"x","name":"\ud83d\udd2c"}]})", "c.json")
                 .microscopes[0]
                 .name,
             "\xf0\x9f\x94\xac");
  EXPECT_NE (error (std::string (100000, '[')).find ("config 'c.json': line 1: nested deeper than 32 levels"),
             std::string::npos);
}

TEST (Templates, RenderQuotesValuesAndRefusesUnknownPlaceholders)
{
  TempDir dir;
  std::ofstream (dir.file ("t.pipeline")) << "# a comment\nfoo uri={uri}   # trailing\n  ! bar n={n}\n";
  Templates t (dir.path ());
  EXPECT_EQ (t.load ("t"), "foo uri={uri} ! bar n={n}");
  EXPECT_EQ (Templates::render (t.load ("t"), {{"uri", Templates::quote ("sim:///a \"b\"\\c")}, {"n", "3"}}),
             "foo uri=\"sim:///a \\\"b\\\"\\\\c\" ! bar n=3");
  EXPECT_THROW (Templates::render ("x={missing}", {}), TemplateError);
  EXPECT_THROW (t.load ("../etc/passwd"), TemplateError);
  EXPECT_THROW (t.load ("nope"), TemplateError);
}

// QuPath's GeoJSON: RFC 4122 name-based ids (the value Python's
// uuid.uuid5 gives for the same namespace and name), QuPath's standard
// classes, and what cannot be a feature left out.
TEST (QuPathGeoJson, IdsClassesAndShapesAsQuPathWritesThem)
{
  namespace qp = livemicro::orchestrator::qupath;
  EXPECT_EQ (qp::name_uuid ("annotation/demo/abc/1"), "1f7998d0-d8ee-53cf-9711-8832a6248f26");
  EXPECT_NE (qp::name_uuid ("annotation/demo/abc/2"), qp::name_uuid ("annotation/demo/abc/1"));
  ASSERT_TRUE (qp::standard_class ("TUMOUR").has_value ());
  EXPECT_EQ (qp::standard_class ("tumor")->name, "Tumor");
  EXPECT_EQ (qp::standard_class ("immune CELLS")->color, (std::array<int, 3>{160, 90, 160}));
  EXPECT_EQ (qp::standard_class ("region*")->color, (std::array<int, 3>{0, 0, 180}));
  EXPECT_FALSE (qp::standard_class ("mitosis?").has_value ());
  EXPECT_FALSE (qp::standard_class ("").has_value ());

  qp::PathObject region;
  region.id = qp::name_uuid ("r");
  region.points_px = {{0, 0}, {10, 0}, {10, 5.1234567}};
  region.classification = qp::standard_class ("Stroma");
  region.measurements = {{qp::measurement::kNucleusArea, 12.5}, {"not a number", NAN}};
  qp::PathObject line = region;
  line.shape = qp::Shape::kLineString;
  line.points_px = {{1, 1}}; // one point is no line: left out
  qp::PathObject point;
  point.shape = qp::Shape::kPoint;
  point.object_type = "detection";
  point.points_px = {{3, 4}};
  const std::string text = qp::feature_collection ({region, line, point});
  g_autoptr (JsonParser) p = json_parser_new ();
  ASSERT_TRUE (json_parser_load_from_data (p, text.c_str (), -1, nullptr)) << text;
  JsonArray *features
      = json_object_get_array_member (json_node_get_object (json_parser_get_root (p)), "features");
  ASSERT_EQ (json_array_get_length (features), 2u) << text;
  JsonObject *f = json_array_get_object_element (features, 0);
  JsonArray *ring = json_array_get_array_element (
      json_object_get_array_member (json_object_get_object_member (f, "geometry"), "coordinates"), 0);
  ASSERT_EQ (json_array_get_length (ring), 4u) << "closed";
  EXPECT_DOUBLE_EQ (json_array_get_double_element (json_array_get_array_element (ring, 2), 1), 5.123);
  JsonObject *props = json_object_get_object_member (f, "properties");
  EXPECT_STREQ (json_object_get_string_member (props, "objectType"), "annotation");
  JsonObject *m = json_object_get_object_member (props, "measurements");
  EXPECT_DOUBLE_EQ (json_object_get_double_member (m, "Nucleus: Area µm^2"), 12.5);
  EXPECT_FALSE (json_object_has_member (m, "not a number"));
  JsonObject *pt = json_array_get_object_element (features, 1);
  EXPECT_STREQ (json_object_get_string_member (json_object_get_object_member (pt, "geometry"), "type"),
                "Point");
  EXPECT_FALSE (json_object_has_member (json_object_get_object_member (pt, "properties"), "classification"));
  EXPECT_FALSE (json_object_has_member (json_object_get_object_member (pt, "properties"), "measurements"));
}

namespace {

JsonNode *
parsed (const std::string &text)
{
  g_autoptr (JsonParser) p = json_parser_new ();
  if (!json_parser_load_from_data (p, text.c_str (), (gssize)text.size (), nullptr))
    return nullptr;
  return json_node_copy (json_parser_get_root (p));
}

} // namespace

// Numbers go out in their shortest form and read back as the very same
// double (and still as a double); everything else is written exactly as
// json-glib writes it: escapes, UTF-8, member order, nesting, integers.
TEST (JsonText, ShortestNumbersThatReadBackTheSameAndJsonGlibsTextOtherwise)
{
  auto number = [] (double v) {
    std::string s;
    append_json_number (s, v);
    return s;
  };
  EXPECT_EQ (number (37512.35), "37512.35");
  EXPECT_EQ (number (0.1), "0.1");
  EXPECT_EQ (number (2), "2.0") << "a double stays a double";
  EXPECT_EQ (number (-0.0), "-0.0");
  EXPECT_EQ (number (1e300), "1e+300");
  EXPECT_EQ (number (NAN), "null");
  EXPECT_EQ (number (-INFINITY), "null");
  // Any double reads back bit for bit, as a double.
  std::mt19937_64 rng (7);
  for (int i = 0; i < 20000; i++) {
    double v;
    const uint64_t bits = rng ();
    std::memcpy (&v, &bits, sizeof v);
    if (i % 2)
      v = std::ldexp ((double)(rng () >> 11), (int)(rng () % 80) - 60) * (rng () % 2 ? 1 : -1);
    if (!std::isfinite (v))
      continue;
    const std::string text = "[" + number (v) + "]";
    g_autoptr (JsonNode) back = parsed (text);
    ASSERT_NE (back, nullptr) << text;
    JsonNode *e = json_array_get_element (json_node_get_array (back), 0);
    ASSERT_EQ (json_node_get_value_type (e), G_TYPE_DOUBLE) << text;
    ASSERT_EQ (json_node_get_double (e), v) << text;
  }

  const char *kNoDoubles = R"({"b":true,"a":null,"s":"\"quoted\" \\ \/ tab\t nl\n cr\r \b \f \u0001 é ✓ 😀",)"
                           R"("n":-9223372036854775807,"z":0,"nested":[[],{},[{"x":[1,[2,{"y":false}]]}]],)"
                           R"("":"empty name","\u00e9\n":1})";
  g_autoptr (JsonNode) plain = parsed (kNoDoubles);
  ASSERT_NE (plain, nullptr);
  g_autofree char *glib = json_to_string (plain, FALSE);
  EXPECT_EQ (json_text (plain), glib);
  EXPECT_EQ (json_text ((JsonNode *)nullptr), "null");
  // Every control character is escaped, as JSON requires (json-glib 1.6
  // writes 0x1f as it is).
  g_autoptr (JsonNode) controls = json_node_new (JSON_NODE_VALUE);
  json_node_set_string (controls, "\x01\x1f\x7f");
  EXPECT_EQ (json_text (controls), "\"\\u0001\\u001f\x7f\"");
}

// A field of nuclei as the worker and the daemon send it (positions rounded
// to 0.01 µm), written straight to text: it decodes to the same field
// exactly, is what json_text writes for its tree, and is ~40 % less text
// than json-glib's of the same tree.
TEST (NucleiField, WrittenStraightToTextDecodesToTheSameField)
{
  AnalysedField field;
  field.analysed_pts = 1234567890123;
  field.x_um = 37512.5;
  field.y_um = 12004.25;
  field.width_um = 480;
  field.height_um = 270;
  field.um_per_px = 0.25;
  for (int i = 0; i < 600; i++) {
    NucleusOutline n;
    n.x_um = std::round ((field.x_um + (i % 30) * 7.31) * 100) / 100;
    n.y_um = std::round ((field.y_um + (i / 30) * 6.93) * 100) / 100;
    n.area_um2 = std::round ((30 + i % 17 * 1.37) * 10) / 10;
    n.mitotic_candidate = i % 11 == 0;
    for (int k = 0; k < 12; k++) {
      n.outline_um.push_back (std::round ((n.x_um + 3.1 * std::cos (k * 0.52)) * 100) / 100);
      n.outline_um.push_back (std::round ((n.y_um + 2.7 * std::sin (k * 0.52)) * 100) / 100);
    }
    field.nuclei.push_back (n);
  }
  field.nuclei.push_back (NucleusOutline{}); // no outline, all zero
  const std::string message = encode (WorkerEvent{event::Nuclei{field}});
  auto back = decode_event (message);
  ASSERT_TRUE (back && std::holds_alternative<event::Nuclei> (*back)) << message.substr (0, 200);
  const AnalysedField &f = std::get<event::Nuclei> (*back).field;
  EXPECT_EQ (f.analysed_pts, field.analysed_pts);
  EXPECT_EQ (f.x_um, field.x_um);
  EXPECT_EQ (f.um_per_px, field.um_per_px);
  ASSERT_EQ (f.nuclei.size (), field.nuclei.size ());
  for (size_t i = 0; i < f.nuclei.size (); i++) {
    EXPECT_EQ (f.nuclei[i].x_um, field.nuclei[i].x_um);
    EXPECT_EQ (f.nuclei[i].area_um2, field.nuclei[i].area_um2);
    EXPECT_EQ (f.nuclei[i].mitotic_candidate, field.nuclei[i].mitotic_candidate);
    EXPECT_EQ (f.nuclei[i].outline_um, field.nuclei[i].outline_um);
  }
  const std::string ours = field_json (field);
  g_autoptr (JsonNode) tree = parsed (ours);
  ASSERT_NE (tree, nullptr);
  EXPECT_EQ (json_text (tree), ours) << "as json_text writes the same tree";
  g_autofree char *theirs = json_to_string (tree, FALSE);
  g_printerr ("a field of 600 nuclei: %zu bytes, json-glib's text %zu (x%.2f)\n", ours.size (),
              strlen (theirs), (double)ours.size () / strlen (theirs));
  EXPECT_LT (ours.size (), strlen (theirs) * 65 / 100);
}

// The field as the worker sends it (pack_field): it unpacks to the very
// same field, and every damaged form is refused: each truncation, a
// trailing byte, a count larger than the bytes, an odd outline, a flag that
// is neither 0 nor 1, a number that is not finite.
TEST (NucleiField, PackedUnpacksToTheSameFieldAndDamageIsRefused)
{
  AnalysedField field;
  field.analysed_pts = 987654321;
  field.x_um = 37512.5;
  field.y_um = -12004.25;
  field.width_um = 480;
  field.height_um = 270;
  field.um_per_px = 0.25;
  for (int i = 0; i < 50; i++) {
    NucleusOutline n;
    n.x_um = field.x_um + i * 1.01;
    n.y_um = field.y_um - i * 0.37;
    n.area_um2 = 20 + i;
    n.mitotic_candidate = i % 7 == 0;
    for (int k = 0; k < 2 * (i % 9); k++)
      n.outline_um.push_back (n.x_um + k * 0.01);
    field.nuclei.push_back (n);
  }
  const std::vector<uint8_t> packed = pack_field (field);
  auto back = unpack_field (packed.data (), packed.size ());
  ASSERT_TRUE (back.has_value ());
  EXPECT_EQ (field_json (*back), field_json (field));
  EXPECT_EQ (pack_field (*back), packed);
  EXPECT_TRUE (unpack_field (pack_field (AnalysedField{}).data (), 56).has_value ()) << "no nuclei";

  for (size_t len = 0; len < packed.size (); len++)
    ASSERT_FALSE (unpack_field (packed.data (), len).has_value ()) << "truncated to " << len;
  std::vector<uint8_t> longer = packed;
  longer.push_back (0);
  EXPECT_FALSE (unpack_field (longer.data (), longer.size ()).has_value ()) << "a trailing byte";
  EXPECT_FALSE (unpack_field (nullptr, 0).has_value ());
  // Byte offsets: the field's head is 56 bytes (its nuclei count at 48),
  // a nucleus' head 32 (its flag at 24, its outline count at 28).
  auto damaged = [&] (size_t at, const void *v, size_t n) {
    std::vector<uint8_t> d = packed;
    std::memcpy (d.data () + at, v, n);
    return unpack_field (d.data (), d.size ()).has_value ();
  };
  const uint64_t lots = 1ull << 60;
  const uint32_t odd = 3, huge = 0xffffffffu, flag = 2;
  const double nan = NAN, inf = INFINITY;
  EXPECT_FALSE (damaged (48, &lots, 8)) << "a count the bytes cannot hold";
  EXPECT_FALSE (damaged (56 + 28, &odd, 4)) << "an odd outline";
  EXPECT_FALSE (damaged (56 + 28, &huge, 4)) << "an outline longer than the bytes";
  EXPECT_FALSE (damaged (56 + 24, &flag, 4)) << "a flag of 2";
  EXPECT_FALSE (damaged (8, &nan, 8)) << "a NaN field centre";
  EXPECT_FALSE (damaged (56, &inf, 8)) << "an infinite nucleus centre";
}

TEST (H264, ParameterSetsGoAfterTheDelimiterBeforeEverythingElse)
{
  const uint8_t aud[] = {0, 0, 0, 1, 0x09, 0xf0}, slice[] = {0, 0, 1, 0x65, 0x88, 0x84};
  const uint8_t ps[] = {0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80};
  std::vector<uint8_t> with_aud (aud, aud + sizeof aud);
  with_aud.insert (with_aud.end (), slice, slice + sizeof slice);
  std::vector<uint8_t> p (ps, ps + sizeof ps);
  auto types = [] (const std::vector<uint8_t> &au) {
    std::vector<int> t;
    for (const auto &n : h264::nal_units (au.data (), au.size ()))
      t.push_back (n.type);
    return t;
  };
  EXPECT_EQ (types (h264::with_parameter_sets (with_aud.data (), with_aud.size (), p)),
             (std::vector<int>{h264::kAud, h264::kSps, h264::kPps, h264::kIdr}));
  EXPECT_EQ (types (h264::with_parameter_sets (slice, sizeof slice, p)),
             (std::vector<int>{h264::kSps, h264::kPps, h264::kIdr}));
}

// ---- a viewer's timestamps from the capture clock

// Players that join a view together are served by one keyframe: a request
// while one is on its way is not passed on; the keyframe's arrival, or a
// second without it, lets the next request through.
TEST (ViewStream, PlayersJoiningTogetherCostTheEncoderOneKeyframe)
{
  gst_init (nullptr, nullptr);
  ViewStream view (1, "demo", "owner", "owner|1280x720@30|2500k");
  int asked = 0;
  view.set_keyframe_request ([&asked] { asked++; });
  std::vector<GstElement *> srcs;
  auto join = [&] {
    srcs.push_back (gst_element_factory_make ("appsrc", nullptr));
    view.add_viewer (GST_APP_SRC (srcs.back ()), ViewStream::Timestamps::kArrival);
  };
  for (int i = 0; i < 5; i++)
    join ();
  EXPECT_EQ (asked, 1) << "five players at once, one keyframe";

  const uint8_t idr[] = {0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00};
  wire::FrameHeader delta_h, key_h;
  key_h.flags = wire::kFlagKeyframe;
  view.push (delta_h, idr, sizeof idr);
  join ();
  EXPECT_EQ (asked, 1) << "a frame that is no keyframe does not serve the waiting players";
  view.push (key_h, idr, sizeof idr);
  join ();
  EXPECT_EQ (asked, 2) << "after the keyframe came, a new player asks for its own";

  g_usleep (ViewStream::kKeyframeRetryUs + 50000);
  join ();
  EXPECT_EQ (asked, 3) << "a keyframe asked for a second ago and never seen is asked for again";
  for (GstElement *e : srcs)
    gst_object_unref (e);
}

TEST (CaptureTimeline, KeepsTheCaptureSpacingNotTheArrivalJitter)
{
  CaptureTimeline t;
  const int64_t capture0 = 1795367801000000000; // ns since the epoch
  const uint64_t frame = 33333333;
  // Frames leave the appsrc at uneven times (a burst queued before PLAY,
  // then jitter): the timestamps follow the capture times.
  uint64_t first = t.pts (capture0, 5000000000, frame);
  EXPECT_EQ (first, 5000000000u) << "anchored at the running time";
  EXPECT_EQ (t.pts (capture0 + (int64_t)frame, 5000000100, frame), first + frame);
  EXPECT_EQ (t.pts (capture0 + 2 * (int64_t)frame, 5000000200, frame), first + 2 * frame);
  EXPECT_EQ (t.pts (capture0 + 3 * (int64_t)frame, 5150000000, frame), first + 3 * frame);
  EXPECT_EQ (t.anchors (), 1);
}

TEST (CaptureTimeline, NeverGoesBackWhateverTheCaptureClockDoes)
{
  CaptureTimeline t;
  const int64_t c = 1795367801000000000;
  const uint64_t frame = 33333333;
  uint64_t last = t.pts (c, 1000000000, frame);
  // The wall clock steps back 10 s, then a worker restarts after a gap of
  // 1.5 s, then two frames carry one capture time, then the clock steps
  // forward an hour.
  std::vector<std::pair<int64_t, uint64_t>> frames = {
      {c + 33333333, 1033333333},     {c - 10000000000, 1066666666}, {c - 10000000000 + 33333333, 1100000000},
      {c - 8500000000, 2600000000},   {c - 8500000000, 2633333333},  {c + 3600000000000, 2666666666},
      {c + 3600033333333, 2700000000}};
  for (auto [capture, now] : frames) {
    uint64_t pts = t.pts (capture, now, frame);
    EXPECT_GT (pts, last) << "capture " << capture - c << " ns after the first";
    EXPECT_LT (pts, now + CaptureTimeline::kMaxDriftNs + frame) << "stays near the running time";
    last = pts;
  }
  // Without a clock (no running time yet) it still increases.
  CaptureTimeline u;
  uint64_t a = u.pts (c, GST_CLOCK_TIME_NONE, frame), b = u.pts (c - 1000, GST_CLOCK_TIME_NONE, frame);
  EXPECT_GT (b, a);
}

// A prepared RTSP media holds its first frame until PLAY: the stream must
// not keep that frame's delay.  After reanchor () the next frame is stamped
// at the running time (after the last timestamp), and the capture spacing
// holds from there.
TEST (CaptureTimeline, ReanchorTakesTheNextFramesDelayNotTheFirstOnes)
{
  CaptureTimeline t;
  const int64_t c = 1795367801000000000;
  const uint64_t frame = 33333333;
  // The first frame left the appsrc 10 ms after capture (running 1.0 s);
  // the keyframe after PLAY was captured 500 ms later and leaves 150 ms
  // after its capture (the prepared frame had waited in between).
  uint64_t first = t.pts (c, 1000000000, frame);
  t.reanchor ();
  uint64_t after_play = t.pts (c + 500000000, 1640000000, frame);
  EXPECT_EQ (after_play, 1640000000u) << "stamped now, not at first + 500 ms (it would wait 140 ms)";
  EXPECT_EQ (t.pts (c + 500000000 + (int64_t)frame, 1640000000 + 20000000, frame), after_play + frame);
  EXPECT_EQ (t.anchors (), 2);
  // Never back, even when reanchored at an earlier running time.
  t.reanchor ();
  EXPECT_GT (t.pts (c + 600000000, 1000000000, frame), after_play + frame);
  EXPECT_GT (after_play, first);
}

// The anchor frame came 100 ms late: every later frame would wait 100 ms
// for its timestamp.  After kSettleFrames early frames in a row the anchor
// moves earlier, half a frame at a time, until they leave on time; the
// timestamps keep increasing all along.
TEST (CaptureTimeline, AFrameThatAnchoredLateDoesNotDelayTheStreamForGood)
{
  CaptureTimeline t;
  const int64_t c = 1795367801000000000;
  const uint64_t frame = 33333333, late = 100000000;
  uint64_t last = t.pts (c, 1000000000 + late, frame);
  uint64_t waits = 0;
  for (int i = 1; i <= 600; i++) {
    uint64_t now = 1000000000 + i * frame; // each later frame leaves on time
    uint64_t pts = t.pts (c + i * (int64_t)frame, now, frame);
    ASSERT_GT (pts, last) << "frame " << i;
    ASSERT_GE (pts - last, frame / 2) << "frame " << i << ": spacing kept within half a frame";
    last = pts;
    waits = pts > now ? pts - now : 0;
  }
  EXPECT_LT (waits, 2000000u) << "still waits " << waits / 1000000.0 << " ms after 20 s";
  EXPECT_EQ (t.anchors (), 1);
}

// The anchor frame came 100 ms late and the frames after it jitter: one in
// three takes 60 ms longer than the others.  The late ones must not pin
// the stream to the anchor's delay: it settles near the frames' median, so
// the quick frames wait little and the slow ones leave as they come.
TEST (CaptureTimeline, JitterDoesNotKeepTheStreamAtALateAnchorsDelay)
{
  CaptureTimeline t;
  const int64_t c = 1795367801000000000;
  const uint64_t frame = 33333333, late = 100000000, slow = 60000000;
  uint64_t last = t.pts (c, 1000000000 + late, frame);
  std::vector<uint64_t> waits;
  for (int i = 1; i <= 900; i++) {
    const uint64_t now = 1000000000 + i * frame + (i % 3 == 0 ? slow : 0);
    const uint64_t pts = t.pts (c + i * (int64_t)frame, now, frame);
    ASSERT_GT (pts, last) << "frame " << i;
    last = pts;
    if (i > 600)
      waits.push_back (pts > now ? pts - now : 0);
  }
  std::sort (waits.begin (), waits.end ());
  EXPECT_LT (waits[waits.size () / 2], 2000000u) << "the median frame still waits after 20 s";
  EXPECT_EQ (t.anchors (), 1);
}

TEST (HopStats, QuantilesOfTheLastSamplesOnly)
{
  HopStats h;
  EXPECT_EQ (h.quantile (0.5), -1) << "no samples yet";
  for (int i = 1; i <= 100; i++)
    h.record (i);
  EXPECT_EQ (h.quantile (0.5), 51);
  EXPECT_EQ (h.quantile (0.95), 96);
  // A full ring forgets the oldest: after kSamples samples of 1 ms, no 100.
  for (size_t i = 0; i < HopStats::kSamples; i++)
    h.record (1);
  EXPECT_EQ (h.samples (), HopStats::kSamples);
  EXPECT_EQ (h.quantile (0.95), 1);
  EXPECT_EQ (h.quantile (1.0), 1);
}

// ---- WHEP offers

namespace {

const std::string kChromiumOffer
    = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
      "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
      "a=fingerprint:sha-256 "
      "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:"
      "CC:DD:EE:FF\r\n"
      "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtpmap:111 "
      "opus/48000/2\r\n"
      "m=video 9 UDP/TLS/RTP/SAVPF 96 102 104 106 108\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\n"
      "a=rtpmap:96 VP8/90000\r\n"
      "a=rtpmap:102 H264/90000\r\na=fmtp:102 "
      "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n"
      "a=rtpmap:104 H264/90000\r\na=fmtp:104 "
      "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n"
      "a=rtpmap:106 H264/90000\r\na=fmtp:106 "
      "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
      "a=rtpmap:108 H264/90000\r\na=fmtp:108 "
      "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f\r\n";

Reason
refusal_of (const std::string &type, const std::string &body)
{
  try {
    parse_whep_offer (type, body.data (), body.size (), 65536);
  } catch (const Refusal &r) {
    EXPECT_FALSE (r.message.empty ());
    return r.reason;
  }
  ADD_FAILURE () << "accepted: " << body.substr (0, 80);
  return Reason::kNotFound;
}

} // namespace

TEST (WhepOffer, PicksConstrainedBaselineInPacketizationMode1)
{
  WhepOffer o = parse_whep_offer ("application/sdp", kChromiumOffer.data (), kChromiumOffer.size (), 65536);
  EXPECT_EQ (o.h264_payload, 106u);
  EXPECT_EQ (o.video_mline, 1u);
  EXPECT_EQ (o.sdp, kChromiumOffer);
  // Baseline will do when constrained baseline is not offered.
  std::string baseline = kChromiumOffer.substr (0, kChromiumOffer.find ("a=rtpmap:104"));
  EXPECT_EQ (parse_whep_offer ("Application/SDP; charset=utf-8", baseline.data (), baseline.size (), 65536)
                 .h264_payload,
             102u);
}

TEST (WhepOffer, RefusesWhatIsNotAWebRtcOfferOrOffersNothingToSend)
{
  EXPECT_EQ (refusal_of ("application/json", kChromiumOffer), Reason::kUnsupportedMediaType);
  EXPECT_EQ (refusal_of ("", kChromiumOffer), Reason::kUnsupportedMediaType);
  EXPECT_EQ (refusal_of ("application/sdp", ""), Reason::kMalformed);
  EXPECT_EQ (refusal_of ("application/sdp", "hello"), Reason::kMalformed);
  EXPECT_EQ (refusal_of ("application/sdp", "v=0\r\nnot a line\r\n"), Reason::kMalformed);
  EXPECT_EQ (refusal_of ("application/sdp", "v=0\r\ns=-\r\n"), Reason::kMalformed) << "no m= section";
  EXPECT_EQ (refusal_of ("application/sdp", std::string ("v=0\r\n\xff\xfe\r\n")), Reason::kMalformed);
  std::string no_ice = kChromiumOffer;
  no_ice.replace (no_ice.find ("a=ice-pwd"), 9, "a=ice-xxx");
  EXPECT_EQ (refusal_of ("application/sdp", no_ice), Reason::kMalformed);
  std::string no_dtls = kChromiumOffer;
  no_dtls.replace (no_dtls.find ("a=fingerprint"), 13, "a=fingerprinx");
  EXPECT_EQ (refusal_of ("application/sdp", no_dtls), Reason::kMalformed);
  std::string vp8_only = kChromiumOffer.substr (0, kChromiumOffer.find ("a=rtpmap:102"));
  EXPECT_EQ (refusal_of ("application/sdp", vp8_only), Reason::kInvalid);
  std::string main_only
      = kChromiumOffer.substr (0, kChromiumOffer.find ("a=rtpmap:96"))
        + "a=rtpmap:108 H264/90000\r\na=fmtp:108 packetization-mode=1;profile-level-id=4d001f\r\n";
  EXPECT_EQ (refusal_of ("application/sdp", main_only), Reason::kInvalid);
  std::string sending = kChromiumOffer;
  sending.replace (sending.rfind ("a=recvonly"), 10, "a=sendonly");
  EXPECT_EQ (refusal_of ("application/sdp", sending), Reason::kInvalid);
  std::string big (70000, 'v');
  EXPECT_EQ (refusal_of ("application/sdp", big), Reason::kTooLarge);
}

// The worker's CaptureLedger: an encoded access unit gets the record of the
// frame that entered the encoder (the encoder shifts PTS by a constant), and
// a view whose profile stripped the capture time gets it back from the
// capture, but nothing else the profile stripped.
TEST (CaptureLedger, EncodedAccessUnitsGetTheRecordOfTheirCapture)
{
  CaptureLedger ledger;
  CaptureLedger::ViewTimeline owner, guest;
  const uint64_t shift = 3600ull * 1000000000ull; // x264enc's min-pts offset
  for (uint64_t k = 0; k < 10; k++) {
    const uint64_t pts = k * 33333333;
    livemicro::hw::FrameRecord r;
    r.stage_x_um = 1000 + 10.0 * k;
    r.stage_y_um = 2000;
    r.um_per_px = 0.5;
    r.frame_width = 1280;
    r.frame_height = 720;
    r.objective = 20;
    r.capture_unix_us = 1700000000000000 + (int64_t)k * 33333;
    r.frame_number = 100 + k;
    ledger.captured (pts, r);
    ledger.entering_encoder (owner, pts, r);
    livemicro::hw::FrameRecord stripped = r; // guest: geometry only
    stripped.capture_unix_us = 0;
    stripped.frame_number = 0;
    ledger.entering_encoder (guest, pts, stripped);
  }
  for (uint64_t k = 0; k < 10; k++) {
    const uint64_t out_pts = k * 33333333 + shift;
    livemicro::hw::FrameRecord o = CaptureLedger::encoded (owner, out_pts);
    EXPECT_EQ (o.frame_number, 100 + k);
    EXPECT_DOUBLE_EQ (o.stage_x_um, 1000 + 10.0 * k);
    EXPECT_EQ (o.capture_unix_us, 1700000000000000 + (int64_t)k * 33333);
    livemicro::hw::FrameRecord g = CaptureLedger::encoded (guest, out_pts);
    EXPECT_EQ (g.capture_unix_us, o.capture_unix_us) << "the guest view's latency needs the capture time";
    EXPECT_EQ (g.frame_number, 0u) << "what the profile stripped stays stripped";
    EXPECT_DOUBLE_EQ (g.stage_x_um, o.stage_x_um);
  }
}

// ---- the RTSP service

// A view's frames leave for its players when the worker hands them over,
// never held until the pipeline's running time reaches their capture-clock
// timestamps (rate control off): here the capture clock runs at twice real
// time, which would halve the frames a player gets.
TEST (RtspService, FramesLeaveWhenHandedOverWhateverTheirCaptureTimesSay)
{
  gst_init (nullptr, nullptr);
  TempDir dir;
  RtspService rtsp ("127.0.0.1", 0, dir.path (), 1);
  GMainLoop *loop = g_main_loop_new (nullptr, FALSE);
  rtsp.start ();
  std::thread loop_thread ([loop] { g_main_loop_run (loop); });

  auto view = std::make_shared<ViewStream> (1, "demo", "owner", "owner|320x240@30|500k");
  SessionRecord s;
  s.id = "s1";
  s.role = "owner";
  s.microscope = "demo";
  const std::string token = "a-token";
  g_autofree gchar *ha1 = g_compute_checksum_for_string (
      G_CHECKSUM_MD5, (s.id + ":" + RtspService::kRealm + ":" + token).c_str (), -1);
  s.digest_ha1 = ha1;
  rtsp.add_session (s, view, "LiveMicro demo — owner view");

  // The view's encoder.
  GstElement *enc = gst_parse_launch (
      "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 "
      "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bframes=0 "
      "! video/x-h264,profile=constrained-baseline,stream-format=byte-stream,alignment=au "
      "! appsink name=out",
      nullptr);
  ASSERT_NE (enc, nullptr);
  GstElement *out = gst_bin_get_by_name (GST_BIN (enc), "out");
  view->set_keyframe_request ([out] {
    gst_element_send_event (out, gst_video_event_new_upstream_force_key_unit (GST_CLOCK_TIME_NONE, TRUE, 0));
  });
  struct Feed {
    ViewStream *view;
    int64_t t0_us = g_get_real_time ();
    std::atomic<int> pushed{0};
  } feed{view.get ()};
  GstAppSinkCallbacks cb = {};
  cb.new_sample = [] (GstAppSink *sink, gpointer d) {
    auto *f = static_cast<Feed *> (d);
    GstSample *sample = gst_app_sink_pull_sample (sink);
    GstBuffer *b = gst_sample_get_buffer (sample);
    wire::FrameHeader h;
    const int64_t now = g_get_real_time ();
    h.record.capture_unix_us = f->t0_us + 2 * (now - f->t0_us);
    h.encoded_unix_us = now;
    h.duration_ns = GST_BUFFER_DURATION_IS_VALID (b) ? GST_BUFFER_DURATION (b) : 0;
    if (!GST_BUFFER_FLAG_IS_SET (b, GST_BUFFER_FLAG_DELTA_UNIT))
      h.flags |= wire::kFlagKeyframe;
    GstMapInfo map;
    if (gst_buffer_map (b, &map, GST_MAP_READ)) {
      f->view->push (h, map.data, map.size);
      gst_buffer_unmap (b, &map);
      f->pushed++;
    }
    gst_sample_unref (sample);
    return GST_FLOW_OK;
  };
  gst_app_sink_set_callbacks (GST_APP_SINK (out), &cb, &feed, nullptr);
  gst_element_set_state (enc, GST_STATE_PLAYING);

  // A player.
  const std::string url = "rtsp://127.0.0.1:" + std::to_string (rtsp.port ()) + "/s/" + s.id;
  GstElement *player = gst_parse_launch (
      ("rtspsrc protocols=tcp latency=0 location=" + url + " user-id=" + s.id + " user-pw=" + token
       + " ! rtph264depay ! fakesink name=sink sync=false signal-handoffs=true")
          .c_str (),
      nullptr);
  ASSERT_NE (player, nullptr);
  std::atomic<int> received{0};
  GstElement *sink = gst_bin_get_by_name (GST_BIN (player), "sink");
  g_signal_connect (sink, "handoff", G_CALLBACK (+[] (GstElement *, GstBuffer *, GstPad *, gpointer d) {
                      (*static_cast<std::atomic<int> *> (d))++;
                    }),
                    &received);
  gst_object_unref (sink);
  gst_element_set_state (player, GST_STATE_PLAYING);
  for (int i = 0; i < 100 && received == 0; i++)
    g_usleep (100000);
  ASSERT_GT (received, 0) << "the player got no frame within 10 s";

  // Over three seconds of streaming, a player gets the frames handed over.
  const int pushed0 = feed.pushed, received0 = received;
  g_usleep (3 * G_USEC_PER_SEC);
  const int pushed = feed.pushed - pushed0, got = received - received0;
  EXPECT_GE (pushed, 30);
  EXPECT_GE (got, pushed * 8 / 10) << got << " frames received of " << pushed << " handed over";

  gst_element_set_state (player, GST_STATE_NULL);
  gst_object_unref (player);
  gst_element_set_state (enc, GST_STATE_NULL);
  gst_object_unref (out);
  gst_object_unref (enc);
  rtsp.remove_session (s.id);
  g_main_loop_quit (loop);
  loop_thread.join ();
  g_main_loop_unref (loop);
}
