// Detection and segmentation scores against instance labels: centroid
// matching within a distance (one-to-one, greedy by distance), count error
// and pixel Dice.  Shared by the accuracy benchmark and the unit tests.
#pragma once

#include <livemicro/analysis/nuclei.h>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace livemicro::bench {

struct Scores {
  int truth = 0, predicted = 0, matched = 0;
  double precision = 0, recall = 0, f1 = 0, count_error = 0, dice = 0;
};

// Centroids (continuous pixel coordinates, pixel i spans [i, i+1)) of the
// instances of a CV_16U or CV_32S label image.
inline std::vector<cv::Point2d>
label_centroids (const cv::Mat &labels)
{
  cv::Mat l32;
  labels.convertTo (l32, CV_32S);
  double mx;
  cv::minMaxLoc (l32, nullptr, &mx);
  std::vector<cv::Point2d> s ((size_t)mx + 1);
  std::vector<double> n ((size_t)mx + 1, 0);
  for (int j = 0; j < l32.rows; j++)
    for (int i = 0; i < l32.cols; i++)
      if (int a = l32.at<int> (j, i)) {
        s[a] += cv::Point2d (i + 0.5, j + 0.5);
        n[a]++;
      }
  std::vector<cv::Point2d> out;
  for (size_t a = 1; a < s.size (); a++)
    if (n[a] > 0)
      out.push_back (s[a] / n[a]);
  return out;
}

// One-to-one matching: pairs closer than max_dist, shortest first.
inline int
match_centroids (const std::vector<cv::Point2d> &truth, const std::vector<cv::Point2d> &pred, double max_dist,
                 std::vector<char> *truth_matched = nullptr, std::vector<char> *pred_matched = nullptr)
{
  std::vector<std::tuple<double, int, int>> pairs;
  for (size_t t = 0; t < truth.size (); t++)
    for (size_t p = 0; p < pred.size (); p++) {
      double d = cv::norm (truth[t] - pred[p]);
      if (d <= max_dist)
        pairs.emplace_back (d, (int)t, (int)p);
    }
  std::sort (pairs.begin (), pairs.end ());
  std::vector<char> tu (truth.size (), 0), pu (pred.size (), 0);
  int m = 0;
  for (auto &[d, t, p] : pairs)
    if (!tu[t] && !pu[p]) {
      tu[t] = pu[p] = 1;
      m++;
    }
  if (truth_matched)
    *truth_matched = tu;
  if (pred_matched)
    *pred_matched = pu;
  return m;
}

inline Scores
score (const std::vector<cv::Point2d> &truth, const std::vector<cv::Point2d> &pred, double max_dist_px,
       const cv::Mat &truth_mask, const cv::Mat &pred_mask)
{
  Scores s;
  s.truth = (int)truth.size ();
  s.predicted = (int)pred.size ();
  s.matched = match_centroids (truth, pred, max_dist_px);
  s.precision = s.predicted ? (double)s.matched / s.predicted : 0;
  s.recall = s.truth ? (double)s.matched / s.truth : 0;
  s.f1 = s.precision + s.recall > 0 ? 2 * s.precision * s.recall / (s.precision + s.recall) : 0;
  s.count_error = s.truth ? std::abs (s.predicted - s.truth) / (double)s.truth : 0;
  if (!truth_mask.empty () && !pred_mask.empty ()) {
    double inter = cv::countNonZero (truth_mask & pred_mask);
    double total = cv::countNonZero (truth_mask) + cv::countNonZero (pred_mask);
    s.dice = total > 0 ? 2 * inter / total : 1;
  }
  return s;
}

// The predicted foreground at frame resolution from an analysis result
// (working-resolution labels, nearest-neighbour upsampled).
inline cv::Mat
predicted_mask (const analysis::Result &r, cv::Size frame)
{
  if (r.label_working.empty ())
    return cv::Mat::zeros (frame, CV_8U);
  cv::Mat fg = r.label_working > 0, up;
  cv::resize (fg, up, frame, 0, 0, cv::INTER_NEAREST);
  return up;
}

// The predicted instances at frame resolution: the working-resolution labels
// nearest-neighbour upsampled (CV_32S, nucleus index + 1).
inline cv::Mat
predicted_labels (const analysis::Result &r, cv::Size frame)
{
  if (r.label_working.empty ())
    return cv::Mat::zeros (frame, CV_32S);
  cv::Mat up;
  cv::resize (r.label_working, up, frame, 0, 0, cv::INTER_NEAREST);
  return up;
}

// Instance-level scores of two label images of the same size (CV_32S or
// CV_16U, 0 = background):
//  - object F1 at IoU > iou: pairs overlapping by more than half their union
//    are unique, so no assignment is needed; F1 = 2·TP / (truth + predicted);
//  - AJI, aggregated Jaccard index (Kumar et al., IEEE TMI 2017): each truth
//    nucleus with the prediction of highest IoU (a prediction may serve
//    several), intersections over unions summed, predictions never chosen
//    added to the union.
//  - where the errors come from (counts of nuclei):
//    missed: truth nuclei of which predictions cover under 20 %;
//    merged: truth nuclei that lie (≥ 50 % of their area) in a prediction
//      holding another such truth nucleus (under-segmentation), in
//      merged_predictions predictions;
//    split_extra: predictions beyond the first that lie (≥ 50 % of their
//      area) in one truth nucleus (over-segmentation);
//    false_objects: predictions of which under 20 % lies on any truth
//      nucleus (stroma, debris, unannotated nuclei).
struct SegmentationScores {
  int truth = 0, predicted = 0, matched = 0;
  double object_f1 = 0, aji = 0;
  int missed = 0, merged = 0, merged_predictions = 0, split_extra = 0, false_objects = 0;
};

// The error sources of SegmentationScores from the areas of the truth (ga)
// and predicted (pa) instances and their overlaps (by truth instance).
inline void
error_sources (const std::vector<int64_t> &ga, const std::vector<int64_t> &pa,
               const std::vector<std::vector<std::pair<int, int64_t>>> &by_truth, SegmentationScores &s)
{
  std::vector<int> truths_inside (pa.size (), 0), preds_inside (ga.size (), 0);
  std::vector<int64_t> on_truth (pa.size (), 0);
  for (size_t g = 1; g < ga.size (); g++) {
    int64_t covered = 0;
    for (auto &[p, n] : by_truth[g]) {
      covered += n;
      on_truth[p] += n;
      if (2 * n >= ga[g])
        truths_inside[p]++;
      if (2 * n >= pa[p])
        preds_inside[g]++;
    }
    if (ga[g] && 5 * covered < ga[g])
      s.missed++;
    if (preds_inside[g] > 1)
      s.split_extra += preds_inside[g] - 1;
  }
  for (size_t p = 1; p < pa.size (); p++) {
    if (truths_inside[p] > 1) {
      s.merged += truths_inside[p];
      s.merged_predictions++;
    }
    if (pa[p] && 5 * on_truth[p] < pa[p])
      s.false_objects++;
  }
}

inline SegmentationScores
segmentation_scores (const cv::Mat &truth_in, const cv::Mat &pred_in, double iou = 0.5)
{
  cv::Mat truth, pred;
  truth_in.convertTo (truth, CV_32S);
  pred_in.convertTo (pred, CV_32S);
  double gmax, pmax;
  cv::minMaxLoc (truth, nullptr, &gmax);
  cv::minMaxLoc (pred, nullptr, &pmax);
  std::vector<int64_t> ga ((size_t)gmax + 1, 0), pa ((size_t)pmax + 1, 0);
  std::unordered_map<uint64_t, int64_t> inter;
  for (int j = 0; j < truth.rows; j++) {
    const int *g = truth.ptr<int> (j), *p = pred.ptr<int> (j);
    for (int i = 0; i < truth.cols; i++) {
      ga[g[i]]++;
      pa[p[i]]++;
      if (g[i] && p[i])
        inter[((uint64_t)g[i] << 32) | (uint32_t)p[i]]++;
    }
  }
  std::vector<std::vector<std::pair<int, int64_t>>> by_truth (ga.size ());
  for (auto &[key, n] : inter)
    by_truth[key >> 32].emplace_back ((int)(key & 0xffffffffu), n);
  SegmentationScores s;
  for (size_t g = 1; g < ga.size (); g++)
    s.truth += ga[g] > 0;
  for (size_t p = 1; p < pa.size (); p++)
    s.predicted += pa[p] > 0;
  std::vector<char> used (pa.size (), 0);
  double c = 0, u = 0;
  for (size_t g = 1; g < ga.size (); g++) {
    if (!ga[g])
      continue;
    double best = 0;
    int best_p = 0;
    int64_t best_i = 0;
    for (auto &[p, n] : by_truth[g]) {
      double j = (double)n / (double)(ga[g] + pa[p] - n);
      if (j > iou)
        s.matched++;
      if (j > best) {
        best = j;
        best_p = p;
        best_i = n;
      }
    }
    if (best_p) {
      c += (double)best_i;
      u += (double)(ga[g] + pa[best_p] - best_i);
      used[best_p] = 1;
    } else {
      u += (double)ga[g];
    }
  }
  for (size_t p = 1; p < pa.size (); p++)
    if (pa[p] && !used[p])
      u += (double)pa[p];
  s.aji = u > 0 ? c / u : 1;
  error_sources (ga, pa, by_truth, s);
  s.object_f1 = s.truth + s.predicted > 0 ? 2.0 * s.matched / (s.truth + s.predicted) : 1;
  return s;
}

} // namespace livemicro::bench
