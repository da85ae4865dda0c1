// What livemicrod and a livemicro-worker say to each other, as types.
//
// The wire (wire.h) frames messages; this is the one codec that turns its
// JSON messages into these types and back (json-glib), used by both ends.
// Commands go daemon → worker, events worker → daemon.  A message that does
// not decode (unknown name, wrong member types) is dropped by the receiver
// with a warning: the peer is our own process, but its bytes still cross a
// process boundary.
#pragma once

#include <livemicro/hw/limits.h>

#include <json-glib/json-glib.h>

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace livemicro::orchestrator {

// ---- shared vocabulary ------------------------------------------------------

// A stage, focus or objective command, as the hardware thread runs it.
enum class CommandOp { kMove, kMoveBy, kFocus, kFocusBy, kObjective, kJog, kAutofocus, kStop };
const char *command_op_name (CommandOp op);
std::optional<CommandOp> command_op_from_name (const std::string &name);

// The limits remote control keeps to with the current objective: the
// hardware layer's own type (livemicro::hw::soft_limits computes them).
using hw::SoftLimits;

// Where the microscope is, as its worker reports it (10 Hz while it moves).
struct MicroscopeStatus {
  double x_um = 0, y_um = 0, z_um = 0;
  int objective = 0; // magnification
  double um_per_px = 0;
  bool moving = false;
  double stage_speed_um_s = 0;
  std::vector<int> objectives;      // mounted magnifications
  std::optional<SoftLimits> limits; // known once the camera runs
};

// The latest analysis of the capture (tumorfeatures' summary; see
// livemicro/featuresmeta.h for the meaning of each field).
struct AnalysisSummary {
  bool analysed = false;
  std::string quality; // ok, blank, no_tissue, low_resolution, wrong_stain, out_of_focus
  uint64_t frames_analysed = 0, frames_skipped = 0;
  uint32_t frame_width = 0, frame_height = 0;
  double um_per_px = 0, working_um_per_px = 0;
  std::string stain;
  double tissue_fraction = 0, tissue_area_mm2 = 0, mean_h_od = 0, mean_e_od = 0, focus = 0, dab_fraction = 0,
         analysis_ms = 0;
  std::optional<uint64_t> analysed_pts;
  std::optional<double> he_ratio;
  // Only when the quality is ok:
  std::optional<uint32_t> nuclei_count, mitotic_candidates, pleomorphism;
  std::optional<double> nuclei_per_mm2, mean_area_um2, cv_area, mean_circularity, cv_h_od, size_ratio,
      mitotic_candidates_per_mm2;
  std::optional<std::string> grade_cue, grade_cue_note;
};

// The nuclei of the latest analysis on the slide, for pages that draw
// outlines and a heat map themselves (RTSP players keep the burned-in
// overlay).  Everything in slide µm, so a page places it with the stage
// position of the frame it shows; outlines are simplified to 0.25 µm.
struct NucleusOutline {
  double x_um = 0, y_um = 0; // centroid
  double area_um2 = 0;
  bool mitotic_candidate = false;
  std::vector<double> outline_um; // x0, y0, x1, y1, … (closed polygon)
};
struct AnalysedField {
  uint64_t analysed_pts = 0;
  double x_um = 0, y_um = 0;          // centre of the analysed frame
  double width_um = 0, height_um = 0; // its extent
  double um_per_px = 0;
  std::vector<NucleusOutline> nuclei;
};

// A low-resolution map of the whole slide: the slide's macro image where
// the microscope knows one (the virtual microscope), with the frames
// captured so far pasted where their StageMeta places them.  Unmasked: the
// daemon masks it per viewer before it leaves (docs/viewer.md).
struct SlideOverview {
  double x_um = 0, y_um = 0, width_um = 0, height_um = 0; // what it covers
  uint32_t width = 0, height = 0;                         // pixels
  bool macro = false;                                     // started from the slide's own macro image
  std::string png_base64;                                 // RGB
};

// A number as JSON.  json-glib 1.6 writes a double whose shortest form has
// an exponent but no point as invalid JSON ("1e+308.0"), and has no NaN or
// infinity: such doubles (all integral, |v| ≥ 2^53) are written as integers
// when they fit 64 bits, the rest as null.
void add_number (JsonBuilder *b, double v);

// The members of a status, limits or summary, written into an open JSON
// object: the API shows them exactly as they cross the wire.
void add_status_members (JsonBuilder *b, const MicroscopeStatus &s);
void add_limits_members (JsonBuilder *b, const SoftLimits &l);
void add_summary_members (JsonBuilder *b, const AnalysisSummary &a);

// A field's nuclei as a JSON object (the 'nuclei' event to the pages):
// {"analysed_pts", "x_um", "y_um", "width_um", "height_um", "um_per_px",
// "nuclei": [{"x_um", "y_um", "area_um2", "mitotic_candidate", "outline_um":
// [x0, y0, x1, y1, …]}, …]}.  Written straight to text, each number in its
// shortest form (json_writer.h): a dense field is thousands of nuclei
// twice a second, and a tree of json-glib nodes for it cost the daemon's
// main loop ~190 ms (bench-orchestrator nuclei-json).
std::string field_json (const AnalysedField &f);

// The field as the worker sends it (wire::Type::kNuclei): its numbers as
// they are, in native byte order (both ends are this build on this host).
// json-glib took ~100 ms to parse a field of 4000 nuclei as JSON; this
// form unpacks in about a millisecond.  unpack_field checks every count
// against the bytes there are and refuses anything else: a truncated or
// damaged message, trailing bytes, an odd outline.
std::vector<uint8_t> pack_field (const AnalysedField &f);
std::optional<AnalysedField> unpack_field (const uint8_t *data, size_t len);

// ---- daemon → worker ----------------------------------------------------------

namespace command {
struct Start {
  std::string capture; // gst-launch description of the capture branch
};
struct AddView {
  uint32_t view = 0;
  std::string description;
};
struct RemoveView {
  uint32_t view = 0;
};
struct Keyframe {
  uint32_t view = 0;
};
struct Still {
  uint32_t view = 0;
  int64_t request = 0;
};
struct Hardware {
  uint64_t id = 0;
  CommandOp op = CommandOp::kStop;
  double a = 0, b = 0; // move x,y / move_by dx,dy / focus z / focus_by dz / jog vx,vy (µm, µm/s)
  int objective = 0;
};
struct Quit {};
// Who is watching, as the daemon sees it; sent whenever it changes and after
// each start (the worker starts idle).  The worker encodes a view only while
// it is in `playing` (or a still of it is pending), runs the capture at full
// rate only while some view encodes (or an autofocus or `analysis` needs
// frames), and analyses only while `analysis` or a playing view draws the
// analysis.  See docs/media-demand.md.
struct Demand {
  std::vector<uint32_t> playing; // views with at least one player
  bool analysis = false;         // someone reads the analysis (events or viewer socket)
};
} // namespace command
using WorkerCommand = std::variant<command::Start, command::AddView, command::RemoveView, command::Keyframe,
                                   command::Still, command::Hardware, command::Quit, command::Demand>;

std::string encode (const WorkerCommand &c);
std::optional<WorkerCommand> decode_command (const std::string &json);

// ---- worker → daemon -----------------------------------------------------------

namespace event {
struct Hello {
  int pid = 0;
};
struct Started {};
struct State {
  MicroscopeStatus status;
};
struct Features {
  AnalysisSummary summary;
};
struct ViewStats {
  uint32_t view = 0;
  uint64_t frames = 0, dropped = 0, bytes = 0;
  double fps = 0;
  bool encoding = false; // frames enter its encoder (it has players or a still pending)
};
struct Stats {
  std::vector<ViewStats> views;
  double analysis_ms_mean = 0;
  uint64_t analysis_count = 0;
  uint64_t capture_frames = 0;  // frames the capture delivered since the worker started
  bool capture_active = false;  // full rate (false: idle, one frame per idle interval)
  bool analysis_active = false; // tumorfeatures analyses
};
struct ViewAdded {
  uint32_t view = 0;
};
struct ViewError {
  uint32_t view = 0;
  std::string message;
};
// A hardware command ended: done, failed (with why) or cancelled.
struct CommandEnded {
  uint64_t id = 0;
  std::string op, status, detail;
};
struct StillTaken {
  int64_t request = 0;
  std::string error;      // empty: taken
  std::string png_base64; // the still, lossless
  uint32_t width = 0, height = 0;
};
struct Warning {
  std::string source, message;
};
// The worker sends it packed (pack_field, wire::Type::kNuclei); encode and
// decode_event still read and write its JSON form ({"event": "nuclei",
// "field": field_json}).
struct Nuclei {
  AnalysedField field;
};
struct Overview {
  SlideOverview overview;
};
// A device of the microscope went away or came back.
struct Device {
  std::string part, device, problem;
  bool online = true;
};
// The capture failed; the worker exits.
struct Failed {
  std::string message;
};
} // namespace event
using WorkerEvent
    = std::variant<event::Hello, event::Started, event::State, event::Features, event::Stats,
                   event::ViewAdded, event::ViewError, event::CommandEnded, event::StillTaken, event::Warning,
                   event::Device, event::Failed, event::Nuclei, event::Overview>;

std::string encode (const WorkerEvent &e);
std::optional<WorkerEvent> decode_event (const std::string &json);

} // namespace livemicro::orchestrator
