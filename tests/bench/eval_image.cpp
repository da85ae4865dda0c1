// Development aid and CLI for the accuracy benchmark: analyse one image,
// optionally score it against instance labels and draw the contours.
//   eval-image IMAGE UM_PER_PX [LABELS.png] [--overlay OUT.png] [--scale S] [--macenko]
//              [--method model|classical] [--model FILE.onnx]
#include "accuracy.h"

#include <opencv2/imgcodecs.hpp>

#include <cstdio>
#include <cstring>
#include <string>

using namespace livemicro;

// Long by nature: one command read top to bottom (its arguments, the analysis, the
// comparison with the ground truth and the report in the order they are printed).
int
main (int argc, char **argv)
{
  if (argc < 3) {
    std::fprintf (stderr,
                  "usage: eval-image IMAGE UM_PER_PX [LABELS] [--overlay OUT] [--scale S] [--macenko]\n");
    return 2;
  }
  std::string labels_path, overlay_path;
  int repeat = 1;
  analysis::Params p;
  p.want_labels = true;
  for (int i = 3; i < argc; i++) {
    if (!std::strcmp (argv[i], "--overlay") && i + 1 < argc)
      overlay_path = argv[++i];
    else if (!std::strcmp (argv[i], "--repeat") && i + 1 < argc)
      repeat = std::atoi (argv[++i]);
    else if (!std::strcmp (argv[i], "--method") && i + 1 < argc) {
      std::string m = argv[++i];
      p.method = m == "model" ? analysis::Method::kModel : analysis::Method::kClassical;
    } else if (!std::strcmp (argv[i], "--model") && i + 1 < argc)
      p.model_path = argv[++i];
    else if (!std::strcmp (argv[i], "--scale") && i + 1 < argc)
      p.analysis_scale = std::atof (argv[++i]);
    else if (!std::strcmp (argv[i], "--set") && i + 1 < argc) {
      std::string kv = argv[++i];
      std::string k = kv.substr (0, kv.find ('='));
      double v = std::atof (kv.substr (kv.find ('=') + 1).c_str ());
      if (k == "otsu")
        p.otsu_factor = v;
      else if (k == "floor")
        p.min_threshold_od = v;
      else if (k == "depth")
        p.split_depth_um = v;
      else if (k == "iw")
        p.intensity_weight = v;
      else if (k == "objr")
        p.object_radius_um = v;
      else if (k == "mc")
        p.mean_contrast_fraction = v;
      else if (k == "width")
        p.min_width_um = v;
      else if (k == "low")
        p.low_fraction = v;
      else if (k == "edge")
        p.edge_fraction = v;
      else if (k == "splitr")
        p.min_split_radius_um = v;
      else if (k == "smooth")
        p.smooth_sigma_um = v;
      else if (k == "bg")
        p.background_radius_um = v;
      else if (k == "minarea")
        p.min_area_um2 = v;
      else if (k == "work")
        p.working_um_per_px = v;
      else if (k == "fg")
        p.fg_threshold = v;
      else if (k == "marker")
        p.marker_threshold = v;
      else {
        std::fprintf (stderr, "unknown %s\n", k.c_str ());
        return 2;
      }
    } else if (!std::strcmp (argv[i], "--macenko"))
      p.stain = analysis::StainMethod::kMacenko;
    else
      labels_path = argv[i];
  }
  cv::Mat bgr = cv::imread (argv[1], cv::IMREAD_COLOR);
  if (bgr.empty ()) {
    std::fprintf (stderr, "cannot read %s\n", argv[1]);
    return 1;
  }
  double upp = std::atof (argv[2]);
  analysis::Analyzer a (p);
  analysis::Result r = a.analyze (bgr, upp, {2, 1, 0});
  for (int k = 1; k < repeat; k++) // for CPU-time profiling (perf stat)
    r = a.analyze (bgr, upp, {2, 1, 0});
  const auto &s = r.summary;
  std::printf ("quality=%s tissue=%.3f focus=%.3f dab=%.3f he=%.2f meanH=%.3f n=%d area=%.1f cv=%.2f "
               "circ=%.2f cvH=%.2f pleo=%d mit=%d cue=%s work_upp=%.3f ms=%.1f\n",
               analysis::quality_name (s.quality), s.tissue_fraction, s.focus, s.dab_fraction, s.he_ratio,
               s.mean_h_od, s.nuclei_count, s.mean_area_um2, s.cv_area, s.mean_circularity, s.cv_h_od,
               s.pleomorphism, s.mitotic_candidates, s.grade_cue.c_str (), s.working_um_per_px,
               r.analysis_ms);
  if (!labels_path.empty ()) {
    cv::Mat lab = cv::imread (labels_path, cv::IMREAD_UNCHANGED);
    std::vector<cv::Point2d> truth = bench::label_centroids (lab), pred;
    for (const auto &n : r.nuclei)
      pred.emplace_back (n.x_px, n.y_px);
    bench::Scores sc = bench::score (truth, pred, 2.0 / upp, lab > 0, bench::predicted_mask (r, bgr.size ()));
    std::printf ("truth=%d pred=%d matched=%d P=%.3f R=%.3f F1=%.3f count_err=%.3f dice=%.3f\n", sc.truth,
                 sc.predicted, sc.matched, sc.precision, sc.recall, sc.f1, sc.count_error, sc.dice);
  }
  if (!overlay_path.empty ()) {
    cv::Mat out = bgr.clone ();
    for (const auto &n : r.nuclei) {
      std::vector<cv::Point> c;
      for (auto &p : n.contour)
        c.emplace_back ((int)p.x, (int)p.y);
      cv::polylines (out, std::vector<std::vector<cv::Point>>{c}, true,
                     n.mitotic_candidate ? cv::Scalar (0, 0, 255) : cv::Scalar (0, 255, 0), 1);
    }
    if (!labels_path.empty ()) {
      cv::Mat lab = cv::imread (labels_path, cv::IMREAD_UNCHANGED);
      auto truth = bench::label_centroids (lab);
      std::vector<cv::Point2d> pred;
      for (const auto &n : r.nuclei)
        pred.emplace_back (n.x_px, n.y_px);
      std::vector<char> tm, pm;
      bench::match_centroids (truth, pred, 2.0 / upp, &tm, &pm);
      for (size_t k = 0; k < truth.size (); k++)
        cv::circle (out, truth[k], tm[k] ? 2 : 4, tm[k] ? cv::Scalar (255, 0, 0) : cv::Scalar (0, 0, 255),
                    -1);
      for (size_t k = 0; k < pred.size (); k++)
        if (!pm[k])
          cv::drawMarker (out, pred[k], cv::Scalar (0, 255, 255), cv::MARKER_CROSS, 10, 2);
    }
    cv::imwrite (overlay_path, out);
  }
  return 0;
}
