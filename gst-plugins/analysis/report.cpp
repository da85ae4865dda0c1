// JSON Lines record of one analysed frame or image, with json-glib.
#include "livemicro/analysis/report.h"

#include <json-glib/json-glib.h>

#include <cmath>

namespace livemicro::analysis {

const char *const kGradeCueNote
    = "image-derived cue from pleomorphism and mitotic candidates, not a diagnosis";

namespace {

void
member_double (JsonBuilder *b, const char *name, double v)
{
  json_builder_set_member_name (b, name);
  if (std::isfinite (v))
    json_builder_add_double_value (b, v);
  else
    json_builder_add_null_value (b);
}

void
member_int (JsonBuilder *b, const char *name, std::optional<int64_t> v)
{
  json_builder_set_member_name (b, name);
  if (v)
    json_builder_add_int_value (b, *v);
  else
    json_builder_add_null_value (b);
}

void
member_vec (JsonBuilder *b, const char *name, const cv::Vec3f &v)
{
  json_builder_set_member_name (b, name);
  json_builder_begin_array (b);
  for (int k = 0; k < 3; k++)
    json_builder_add_double_value (b, v[k]);
  json_builder_end_array (b);
}

// Where the record comes from: the image or the frame's times and counts.
void
add_context_members (JsonBuilder *b, const ReportContext &ctx)
{
  if (ctx.image) {
    json_builder_set_member_name (b, "image");
    json_builder_add_string_value (b, ctx.image->c_str ());
  }
  json_builder_set_member_name (b, "analysed");
  json_builder_add_boolean_value (b, ctx.analysed);
  auto opt
      = [] (std::optional<uint64_t> v) { return v ? std::optional<int64_t> ((int64_t)*v) : std::nullopt; };
  member_int (b, "pts_ns", opt (ctx.pts_ns));
  member_int (b, "stream_time_ns", opt (ctx.stream_time_ns));
  member_int (b, "running_time_ns", opt (ctx.running_time_ns));
  member_int (b, "frames_analysed", (int64_t)ctx.frames_analysed);
  member_int (b, "frames_skipped", (int64_t)ctx.frames_skipped);
}

// The frame's geometry, where the stage was, and the stain.
void
add_frame_members (JsonBuilder *b, const Summary &s, const ReportContext &ctx)
{
  json_builder_set_member_name (b, "quality");
  json_builder_add_string_value (b, quality_name (s.quality));
  member_int (b, "frame_width", s.frame_width);
  member_int (b, "frame_height", s.frame_height);
  member_double (b, "um_per_px", s.um_per_px);
  member_double (b, "working_um_per_px", s.working_um_per_px);
  json_builder_set_member_name (b, "stage");
  if (ctx.stage) {
    json_builder_begin_object (b);
    member_double (b, "x_um", ctx.stage->stage_x_um);
    member_double (b, "y_um", ctx.stage->stage_y_um);
    member_double (b, "z_um", ctx.stage->stage_z_um);
    member_int (b, "objective", ctx.stage->objective);
    json_builder_end_object (b);
  } else {
    json_builder_add_null_value (b);
  }
  json_builder_set_member_name (b, "stain");
  json_builder_add_string_value (b, s.stain_method == StainMethod::kMacenko ? "macenko" : "ruifrok-johnston");
  json_builder_set_member_name (b, "stain_vectors");
  json_builder_begin_object (b);
  member_vec (b, "hematoxylin", s.stain_vectors.hematoxylin);
  member_vec (b, "eosin", s.stain_vectors.eosin);
  json_builder_end_object (b);
}

// The measurements; the nuclear ones only when the quality is ok (else null).
void
add_measurement_members (JsonBuilder *b, const Summary &s)
{
  const bool ok = s.quality == Quality::kOk;
  member_double (b, "tissue_fraction", s.tissue_fraction);
  member_double (b, "tissue_area_mm2", s.tissue_area_mm2);
  member_double (b, "mean_h_od", s.mean_h_od);
  member_double (b, "mean_e_od", s.mean_e_od);
  member_double (b, "he_ratio", s.he_ratio);
  member_double (b, "focus", s.focus);
  member_double (b, "dab_fraction", s.dab_fraction);
  member_int (b, "nuclei_count", ok ? std::optional<int64_t> (s.nuclei_count) : std::nullopt);
  member_double (b, "nuclei_per_mm2", ok ? s.nuclei_per_mm2 : NAN);
  member_double (b, "mean_area_um2", ok ? s.mean_area_um2 : NAN);
  member_double (b, "cv_area", ok ? s.cv_area : NAN);
  member_double (b, "mean_circularity", ok ? s.mean_circularity : NAN);
  member_double (b, "cv_h_od", ok ? s.cv_h_od : NAN);
  member_double (b, "size_ratio", ok ? s.size_ratio : NAN);
  member_int (b, "pleomorphism",
              ok && s.pleomorphism > 0 ? std::optional<int64_t> (s.pleomorphism) : std::nullopt);
  member_int (b, "mitotic_candidates", ok ? std::optional<int64_t> (s.mitotic_candidates) : std::nullopt);
  member_double (b, "mitotic_candidates_per_mm2", ok ? s.mitotic_candidates_per_mm2 : NAN);
  json_builder_set_member_name (b, "grade_cue");
  if (ok && !s.grade_cue.empty ())
    json_builder_add_string_value (b, s.grade_cue.c_str ());
  else
    json_builder_add_null_value (b);
  json_builder_set_member_name (b, "grade_cue_note");
  json_builder_add_string_value (b, kGradeCueNote);
}

// "nuclei": one object per nucleus, in slide µm too when the stage is known.
void
add_nuclei_member (JsonBuilder *b, const Result &r, const ReportContext &ctx)
{
  json_builder_set_member_name (b, "nuclei");
  json_builder_begin_array (b);
  for (const Nucleus &n : r.nuclei) {
    json_builder_begin_object (b);
    member_double (b, "x_px", n.x_px);
    member_double (b, "y_px", n.y_px);
    if (ctx.stage) {
      cv::Point2d um = frame_to_slide_um (*ctx.stage, r.summary, n.x_px, n.y_px);
      member_double (b, "x_um", um.x);
      member_double (b, "y_um", um.y);
    }
    member_double (b, "area_um2", n.area_um2);
    member_double (b, "perimeter_um", n.perimeter_um);
    member_double (b, "circularity", n.circularity);
    member_double (b, "elongation", n.elongation);
    member_double (b, "solidity", n.solidity);
    member_double (b, "mean_h_od", n.mean_h_od);
    json_builder_set_member_name (b, "mitotic_candidate");
    json_builder_add_boolean_value (b, n.mitotic_candidate);
    json_builder_set_member_name (b, "contour");
    json_builder_begin_array (b);
    for (const cv::Point2f &p : n.contour) {
      json_builder_begin_array (b);
      json_builder_add_double_value (b, std::round (p.x * 10) / 10);
      json_builder_add_double_value (b, std::round (p.y * 10) / 10);
      json_builder_end_array (b);
    }
    json_builder_end_array (b);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
}

} // namespace

std::string
report_json (const Result &r, const ReportContext &ctx)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  add_context_members (b, ctx);
  add_frame_members (b, r.summary, ctx);
  add_measurement_members (b, r.summary);
  member_double (b, "analysis_ms", r.analysis_ms);
  if (ctx.nuclei)
    add_nuclei_member (b, r, ctx);
  json_builder_end_object (b);
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  json_generator_set_root (gen, root);
  g_autofree char *text = json_generator_to_data (gen, nullptr);
  return text;
}

} // namespace livemicro::analysis
