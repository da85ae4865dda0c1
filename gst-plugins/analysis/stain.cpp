// Stain vectors: Ruifrok & Johnston's standard H/E/DAB, and Macenko's
// per-slide estimate of H and E from optical densities.
#include "livemicro/analysis/nuclei.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace livemicro::analysis {

namespace {

cv::Vec3f
unit (cv::Vec3f v)
{
  double n = cv::norm (v);
  return n > 0 ? v / (float)n : v;
}

} // namespace

StainVectors
ruifrok_johnston ()
{
  // Ruifrok & Johnston, Anal. Quant. Cytol. Histol. 23:291 (2001), the
  // vectors ImageJ and scikit-image use.
  return {unit ({0.650f, 0.704f, 0.286f}), unit ({0.072f, 0.990f, 0.105f}), unit ({0.268f, 0.570f, 0.776f})};
}

std::optional<StainVectors>
estimate_macenko (const cv::Mat &od, double alpha)
{
  // Macenko et al., ISBI 2009: the plane of the two largest principal
  // directions of the OD cloud; the extreme angles (alpha and 100 − alpha
  // percentiles) in that plane are the two stains.
  CV_Assert (od.type () == CV_32FC3);
  if (od.total () < 200)
    return std::nullopt;
  cv::Mat samples = od.reshape (1, (int)od.total ());
  cv::Mat cov, mean;
  cv::calcCovarMatrix (samples, cov, mean, cv::COVAR_NORMAL | cv::COVAR_ROWS | cv::COVAR_SCALE, CV_64F);
  cv::Mat evals, evecs;
  if (!cv::eigen (cov, evals, evecs))
    return std::nullopt;
  // Need two substantial directions: one-colour content is not two stains.
  if (evals.at<double> (1) < 1e-3 * evals.at<double> (0))
    return std::nullopt;
  cv::Vec3d e1 (evecs.at<double> (0, 0), evecs.at<double> (0, 1), evecs.at<double> (0, 2));
  cv::Vec3d e2 (evecs.at<double> (1, 0), evecs.at<double> (1, 1), evecs.at<double> (1, 2));
  // OD is positive: orient the first direction into the positive octant.
  if (e1[0] + e1[1] + e1[2] < 0)
    e1 = -e1;
  // e2 sign: with e1 first and "more blue" ordering fixed below, any sign works.
  std::vector<double> phi;
  phi.reserve (od.total ());
  for (int k = 0; k < samples.rows; k++) {
    const float *p = samples.ptr<float> (k);
    double a = p[0] * e1[0] + p[1] * e1[1] + p[2] * e1[2];
    double b = p[0] * e2[0] + p[1] * e2[1] + p[2] * e2[2];
    phi.push_back (std::atan2 (b, a));
  }
  auto pct = [&] (double q) {
    size_t k = std::min (phi.size () - 1, (size_t)(q / 100.0 * phi.size ()));
    std::nth_element (phi.begin (), phi.begin () + k, phi.end ());
    return phi[k];
  };
  double lo = pct (alpha), hi = pct (100.0 - alpha);
  cv::Vec3d v1 = e1 * std::cos (lo) + e2 * std::sin (lo);
  cv::Vec3d v2 = e1 * std::cos (hi) + e2 * std::sin (hi);
  for (cv::Vec3d *v : {&v1, &v2})
    for (int c = 0; c < 3; c++)
      (*v)[c] = std::max ((*v)[c], 1e-3);
  // Hematoxylin absorbs more red than eosin does.
  cv::Vec3d h = v1, e = v2;
  if (v1[0] / cv::norm (v1) < v2[0] / cv::norm (v2))
    std::swap (h, e);
  cv::Vec3f hf = unit (cv::Vec3f ((float)h[0], (float)h[1], (float)h[2]));
  cv::Vec3f ef = unit (cv::Vec3f ((float)e[0], (float)e[1], (float)e[2]));
  // Too close to one another: the deconvolution would be ill-conditioned.
  if (hf.dot (ef) > 0.98f)
    return std::nullopt;
  cv::Vec3f third = unit (hf.cross (ef));
  if (third[0] + third[1] + third[2] < 0)
    third = -third;
  return StainVectors{hf, ef, third};
}

} // namespace livemicro::analysis
