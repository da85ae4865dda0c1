// Recording a session's view against a real livemicrod on 127.0.0.1: the
// segments are H.264 MP4 that ffprobe reads with the recorded duration, each
// segment's stage track has one line per frame, a guest's recording is
// masked like the guest's video, only the owner (or the admin) records, and
// neither a killed media worker nor a killed daemon leaves an unreadable
// segment.
#include "daemon_process.h"
#include "program_run.h"

#include <gst/app/gstappsink.h>

#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <set>
#include <sstream>

using livemicro::test::Daemon;
using livemicro::test::have;
using livemicro::test::HttpReply;
using livemicro::test::run;
using livemicro::test::TempDir;

namespace {

std::string
config (const std::string &recordings_dir)
{
  return R"({
  "video": {"width": 320, "height": 240, "framerate": 30, "bitrate_kbps": 500},
  "recordings": {"directory": ")"
         + recordings_dir + R"(", "segment_s": 1},
  "microscopes": [{"id": "demo", "uri": "sim://synthetic"}]})";
}

// What ffprobe says of one segment.
struct Segment {
  int status = -1;
  std::string codec;
  double duration_s = -1;
  long frames = -1;
  std::string log;
};

Segment
probe (const std::string &path)
{
  Segment s;
  auto r = run ({"ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                 "stream=codec_name,nb_read_frames:format=duration", "-of", "json", path},
                60);
  s.status = r.status;
  s.log = r.out + r.err;
  g_autoptr (JsonParser) p = json_parser_new ();
  if (r.status != 0 || !json_parser_load_from_data (p, r.out.c_str (), -1, nullptr))
    return s;
  JsonObject *root = json_node_get_object (json_parser_get_root (p));
  JsonArray *streams = json_object_get_array_member (root, "streams");
  if (streams && json_array_get_length (streams) > 0) {
    JsonObject *v = json_array_get_object_element (streams, 0);
    s.codec = json_object_get_string_member_with_default (v, "codec_name", "");
    s.frames = atol (json_object_get_string_member_with_default (v, "nb_read_frames", "-1"));
  }
  if (JsonObject *f = json_object_get_object_member (root, "format"))
    s.duration_s = g_ascii_strtod (json_object_get_string_member_with_default (f, "duration", "-1"), nullptr);
  return s;
}

struct TrackLine {
  long frame = -1, segment = -1, objective = 0;
  int64_t pts_ns = -1, capture_unix_us = 0;
  double stage_x_um = 0;
};

std::vector<TrackLine>
read_track (const std::string &path)
{
  std::vector<TrackLine> lines;
  std::ifstream in (path);
  std::string text;
  while (std::getline (in, text)) {
    g_autoptr (JsonParser) p = json_parser_new ();
    TrackLine l;
    if (json_parser_load_from_data (p, text.c_str (), -1, nullptr)) {
      JsonObject *o = json_node_get_object (json_parser_get_root (p));
      l.frame = json_object_get_int_member_with_default (o, "frame", -1);
      l.segment = json_object_get_int_member_with_default (o, "segment", -1);
      l.objective = json_object_get_int_member_with_default (o, "objective", 0);
      l.pts_ns = json_object_get_int_member_with_default (o, "pts_ns", -1);
      l.capture_unix_us = json_object_get_int_member_with_default (o, "capture_unix_us", 0);
      l.stage_x_um = json_object_get_double_member_with_default (o, "stage_x_um", 0);
    }
    lines.push_back (l);
  }
  return lines;
}

// The segment files of a recording, in order ("segment-00000.mp4", …).
std::vector<std::string>
segments (const std::string &dir)
{
  std::set<std::string> names;
  if (GDir *d = g_dir_open (dir.c_str (), 0, nullptr)) {
    while (const char *n = g_dir_read_name (d))
      if (g_str_has_suffix (n, ".mp4"))
        names.insert (n);
    g_dir_close (d);
  }
  std::vector<std::string> out;
  for (const auto &n : names)
    out.push_back (dir + "/" + n.substr (0, n.size () - 4));
  return out;
}

// The brightest pixel of every frame of an MP4 file (decoded to grey).
std::vector<int>
brightest_pixels (const std::string &path)
{
  std::string desc = "filesrc location=\"" + path
                     + "\" ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! video/x-raw,format=GRAY8 ! "
                       "appsink name=out sync=false";
  GstElement *pipeline = gst_parse_launch (desc.c_str (), nullptr);
  GstElement *sink = gst_bin_get_by_name (GST_BIN (pipeline), "out");
  gst_element_set_state (pipeline, GST_STATE_PLAYING);
  std::vector<int> out;
  while (GstSample *sample = gst_app_sink_try_pull_sample (GST_APP_SINK (sink), 10 * GST_SECOND)) {
    GstMapInfo map;
    GstBuffer *b = gst_sample_get_buffer (sample);
    if (gst_buffer_map (b, &map, GST_MAP_READ)) {
      int hi = 0;
      for (gsize i = 0; i < map.size; i++)
        hi = std::max (hi, (int)map.data[i]);
      out.push_back (hi);
      gst_buffer_unmap (b, &map);
    }
    gst_sample_unref (sample);
  }
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (sink);
  gst_object_unref (pipeline);
  return out;
}

class Recording : public ::testing::Test {
protected:
  static void SetUpTestSuite () { gst_init (nullptr, nullptr); }
  void SetUp () override
  {
    if (!have ("ffprobe"))
      GTEST_SKIP () << "ffmpeg is not installed (scripts/install-deps.sh installs it)";
  }
  HttpReply start (const HttpReply &session, const std::string &body = "{}",
                   const std::string &token = Daemon::kAdminToken)
  {
    return d.request ("POST", "/api/v1/sessions/" + session.str ("id") + "/recording", body, token);
  }
  HttpReply stop (const HttpReply &session, const std::string &token = Daemon::kAdminToken)
  {
    return d.request ("DELETE", "/api/v1/sessions/" + session.str ("id") + "/recording", "", token);
  }
  // Frames the running recording has written so far.
  int64_t frames_recorded (const HttpReply &session)
  {
    HttpReply r = d.request ("GET", "/api/v1/sessions/" + session.str ("id") + "/recording");
    return r.object () ? json_object_get_int_member_with_default (r.object (), "frames", -1) : -1;
  }
  // Every segment plays (H.264, frames), and its stage track has a line
  // per frame with frame numbers following on and times going forward.
  // Returns the track, all segments together.
  std::vector<TrackLine> check_segments (const std::string &dir, bool last_may_be_partial = false)
  {
    std::vector<TrackLine> all;
    auto names = segments (dir);
    EXPECT_GE (names.size (), 1u) << dir;
    for (size_t k = 0; k < names.size (); k++) {
      Segment s = probe (names[k] + ".mp4");
      EXPECT_EQ (s.status, 0) << names[k] << ": " << s.log;
      EXPECT_EQ (s.codec, "h264") << names[k] << ": " << s.log;
      EXPECT_GT (s.frames, 0) << names[k] << ": " << s.log;
      auto track = read_track (names[k] + ".jsonl");
      if (last_may_be_partial && k + 1 == names.size ())
        EXPECT_GE ((long)track.size (), s.frames) << names[k] << ": the track has a line for each frame";
      else
        EXPECT_EQ ((long)track.size (), s.frames) << names[k] << ": one track line per frame";
      for (size_t i = 0; i < track.size (); i++) {
        EXPECT_EQ (track[i].segment, (long)k);
        EXPECT_GT (track[i].objective, 0);
        EXPECT_GT (track[i].capture_unix_us, 0);
        if (i == 0) {
          EXPECT_EQ (track[i].pts_ns, 0) << names[k];
        } else {
          EXPECT_GT (track[i].pts_ns, track[i - 1].pts_ns) << names[k] << " line " << i;
        }
        if (!all.empty ()) {
          EXPECT_EQ (track[i].frame, all.back ().frame + 1);
          EXPECT_GT (track[i].capture_unix_us, all.back ().capture_unix_us);
        }
        all.push_back (track[i]);
      }
    }
    return all;
  }

  TempDir dir;
  const std::string recordings = dir.file ("recordings");
  Daemon d{config (recordings)};
};

} // namespace

TEST_F (Recording, AnOwnerRecordsAViewIntoPlayableSegmentsWithItsStageTrack)
{
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply owner = d.create_session ("olga", "owner");
  ASSERT_EQ (owner.status, 201) << owner.body;
  // Nobody plays: the encoders idle until the recording starts.
  ASSERT_TRUE (d.until_metric ("livemicro_encoders_active{microscope=\"demo\"}", [] (double v) {
    return v == 0;
  })) << d.metrics ();
  const gint64 asked = g_get_monotonic_time ();
  HttpReply started = start (owner, "{}", owner.str ("token"));
  ASSERT_EQ (started.status, 201) << started.body;
  EXPECT_EQ (started.str ("state"), "recording");
  EXPECT_EQ (started.str ("view"), "owner");
  const std::string id = started.str ("recording");
  EXPECT_EQ (id.find ("olga"), std::string::npos) << "no user or patient names in file names";
  // The recording is a player: the owner view's encoder runs.
  EXPECT_TRUE (d.until_metric ("livemicro_encoders_active{microscope=\"demo\"}", [] (double v) {
    return v >= 1;
  })) << d.metrics ();
  EXPECT_EQ (start (owner, "{}", owner.str ("token")).status, 409) << "one recording per session at a time";
  gint64 first = 0;
  for (int i = 0; i < 200 && !first; i++, g_usleep (20000))
    if (frames_recorded (owner) > 0)
      first = g_get_monotonic_time ();
  ASSERT_GT (first, 0) << "no frame recorded\n" << d.log ();
  g_usleep (3000000);
  HttpReply stopped = stop (owner, owner.str ("token"));
  const double recorded_for_s = (g_get_monotonic_time () - asked) / 1e6;
  ASSERT_EQ (stopped.status, 200) << stopped.body;
  EXPECT_EQ (stopped.str ("state"), "stopped");
  EXPECT_EQ (d.request ("GET", "/api/v1/sessions/" + owner.str ("id") + "/recording").str ("state"),
             "stopped");

  auto track = check_segments (recordings + "/" + id);
  double seconds = 0;
  for (const auto &name : segments (recordings + "/" + id))
    seconds += probe (name + ".mp4").duration_s;
  // About 3 s: at most the time from the start request to the stop's answer
  // (longer than 3 s when the machine is loaded), plus the half-second
  // fragment the muxer may close with.
  EXPECT_GT (seconds, 2.5) << "about 3 s recorded";
  EXPECT_LT (seconds, recorded_for_s + 0.5) << "recorded for at most " << recorded_for_s << " s";
  EXPECT_GE (segments (recordings + "/" + id).size (), 2u) << "1 s segments";
  EXPECT_EQ ((int64_t)track.size (),
             json_object_get_int_member (stopped.object (), "frames")); // every frame has its line
  // The frames of 3 s at 30 fps (a loaded machine renders fewer).
  EXPECT_GT (track.size (), 45u);
  // Audited: the start and the stop, by the owner.
  HttpReply audit = d.request ("GET", "/api/v1/audit?limit=1000");
  EXPECT_NE (audit.body.find ("\"recording.start\""), std::string::npos) << audit.body;
  EXPECT_NE (audit.body.find ("\"recording.stop\""), std::string::npos) << audit.body;
  EXPECT_NE (audit.body.find (id), std::string::npos) << audit.body;
  // Stopped: the encoder idles again.
  EXPECT_TRUE (d.until_metric ("livemicro_encoders_active{microscope=\"demo\"}", [] (double v) {
    return v == 0;
  })) << d.metrics ();
}

// The guest's recording is the guest's masked stream: on the slide label it
// is black, where the owner's recording of the same place shows the label.
TEST_F (Recording, AGuestRecordingIsMaskedLikeTheGuestsVideo)
{
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply owner = d.create_session ("olga", "owner"), guest = d.create_session ("gus", "guest");
  ASSERT_EQ (guest.status, 201) << guest.body;
  // The stage on the slide label (where the patient's data is printed).
  ASSERT_EQ (livemicro::test::move_stage (d, owner.str ("token"), 10000, 12000), "");
  HttpReply g = start (guest, "{}", owner.str ("token")), o = start (owner, "{}", owner.str ("token"));
  ASSERT_EQ (g.status, 201) << g.body;
  ASSERT_EQ (o.status, 201) << o.body;
  EXPECT_EQ (g.str ("view"), "guest");
  for (int i = 0; i < 300 && (frames_recorded (guest) < 30 || frames_recorded (owner) < 30); i++)
    g_usleep (20000);
  ASSERT_EQ (stop (guest, owner.str ("token")).status, 200);
  ASSERT_EQ (stop (owner, owner.str ("token")).status, 200);
  std::vector<int> guest_frames, owner_frames;
  for (const auto &name : segments (recordings + "/" + g.str ("recording")))
    for (int v : brightest_pixels (name + ".mp4"))
      guest_frames.push_back (v);
  for (const auto &name : segments (recordings + "/" + o.str ("recording")))
    for (int v : brightest_pixels (name + ".mp4"))
      owner_frames.push_back (v);
  ASSERT_GE (guest_frames.size (), 20u);
  ASSERT_GE (owner_frames.size (), 20u);
  for (size_t k = 0; k < guest_frames.size (); k++)
    EXPECT_LT (guest_frames[k], 48) << "guest recording frame " << k << " shows something";
  EXPECT_GT (owner_frames.back (), 100) << "the owner's recording shows the label there";
}

TEST_F (Recording, OnlyTheOwnerRecordsAndABadRequestStartsNothing)
{
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply owner = d.create_session ("olga", "owner");
  HttpReply consultant = d.create_session ("carla", "consultant", "demo", owner.str ("token"));
  ASSERT_EQ (consultant.status, 201) << consultant.body;
  // A consultant records neither its own view nor the owner's.
  EXPECT_EQ (start (consultant, "{}", consultant.str ("token")).status, 403);
  EXPECT_EQ (start (owner, "{}", consultant.str ("token")).status, 403);
  EXPECT_EQ (stop (owner, consultant.str ("token")).status, 403);
  EXPECT_EQ (start (owner, "{}", "").status, 401);
  // Bad bodies.
  EXPECT_EQ (start (owner, "{", owner.str ("token")).status, 400);
  EXPECT_EQ (start (owner, "[]", owner.str ("token")).status, 400);
  EXPECT_EQ (start (owner, R"({"segment_s": "ten"})", owner.str ("token")).status, 422);
  EXPECT_EQ (start (owner, R"({"segment_s": 0})", owner.str ("token")).status, 422);
  EXPECT_EQ (start (owner, R"({"path": "/etc"})", owner.str ("token")).status, 422);
  // Nothing started: no recording, no file, nothing to stop.
  EXPECT_EQ (d.request ("GET", "/api/v1/sessions/" + owner.str ("id") + "/recording").status, 404);
  EXPECT_EQ (stop (owner, owner.str ("token")).status, 404);
  EXPECT_TRUE (segments (recordings).empty ());
  GDir *made = g_dir_open (recordings.c_str (), 0, nullptr);
  EXPECT_TRUE (!made || !g_dir_read_name (made)) << "no recording directory was made";
  if (made)
    g_dir_close (made);
  EXPECT_TRUE (d.until_metric ("livemicro_encoders_active{microscope=\"demo\"}", [] (double v) {
    return v == 0;
  })) << d.metrics ();
  // The refusals are audited.
  HttpReply audit = d.request ("GET", "/api/v1/audit?limit=1000");
  EXPECT_NE (audit.body.find ("refused: only the microscope's owner"), std::string::npos) << audit.body;
}

// A media worker killed while recording: the recording goes on after the
// restart (the gap counted as an interruption), every segment plays.
TEST_F (Recording, AKilledMediaWorkerIsAGapNotTheEndOfTheRecording)
{
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply owner = d.create_session ("olga", "owner");
  HttpReply started = start (owner, "{}", owner.str ("token"));
  ASSERT_EQ (started.status, 201) << started.body;
  for (int i = 0; i < 300 && frames_recorded (owner) < 30; i++)
    g_usleep (20000);
  int pid = d.worker_pid ();
  ASSERT_GT (pid, 0);
  const int64_t killed_unix_us = g_get_real_time ();
  ASSERT_EQ (kill (pid, SIGKILL), 0);
  // Back: a new worker, and frames recorded after it.
  int64_t before = frames_recorded (owner);
  bool back = false;
  for (int i = 0; i < 500 && !back; i++, g_usleep (20000))
    back = d.worker_pid () != pid && d.worker_pid () > 0 && frames_recorded (owner) > before + 30;
  ASSERT_TRUE (back) << "the recording goes on after the worker's restart\n" << d.log ();
  HttpReply running = d.request ("GET", "/api/v1/sessions/" + owner.str ("id") + "/recording");
  EXPECT_EQ (running.str ("state"), "recording");
  EXPECT_GE (json_object_get_int_member (running.object (), "interruptions"), 1) << running.body;
  HttpReply stopped = stop (owner, owner.str ("token"));
  ASSERT_EQ (stopped.status, 200) << stopped.body;
  auto track = check_segments (recordings + "/" + started.str ("recording"));
  ASSERT_FALSE (track.empty ());
  EXPECT_LT (track.front ().capture_unix_us, killed_unix_us);
  EXPECT_GT (track.back ().capture_unix_us, killed_unix_us + 500000) << "frames from the restarted worker";
}

// The daemon itself killed mid-segment: the closed segments play, the open
// one plays up to its last fragment, and after a restart the recording is
// reported as not running (no recording survives its daemon).
TEST_F (Recording, AKilledDaemonLeavesPlayableSegmentsAndReportsNoRecording)
{
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply owner = d.create_session ("olga", "owner");
  HttpReply started = start (owner, "{}", owner.str ("token"));
  ASSERT_EQ (started.status, 201) << started.body;
  // Killed once the third segment has had more than its first fragment's
  // frames (kFragmentMs, 0.5 s) from the muxer.
  const std::string dir = recordings + "/" + started.str ("recording");
  for (int i = 0; i < 500 && read_track (dir + "/segment-00002.jsonl").size () < 20; i++)
    g_usleep (20000);
  ASSERT_GE (read_track (dir + "/segment-00002.jsonl").size (), 20u);
  ASSERT_EQ (kill (d.pid (), SIGKILL), 0);
  for (int i = 0; i < 250 && d.running (); i++)
    g_usleep (20000);
  ASSERT_GE (segments (dir).size (), 3u);
  check_segments (dir, true);
  d.stop ();
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply after = d.request ("GET", "/api/v1/sessions/" + owner.str ("id") + "/recording");
  EXPECT_EQ (after.status, 404) << after.body;
}
