// Printed codes for the privacy tests and benchmarks: a QR symbol and an
// EAN-13 barcode as a label printer makes them (black modules on white,
// with a quiet zone), and a way to turn one on its white paper.
#pragma once

#include <opencv2/imgproc.hpp>
#include <opencv2/objdetect.hpp>

#include <cmath>
#include <string>
#include <vector>

namespace livemicro::test {

// What a specimen label's code carries: patient data.
constexpr const char *kPatientCodePayload = "PID:00424242;NAME:ROSSI^MARIA;DOB:1950-01-02";

// A QR symbol of `side_px` × `side_px` (8-bit RGB, no quiet zone beyond the
// encoder's own).
inline cv::Mat
qr_symbol (int side_px, const std::string &payload = kPatientCodePayload)
{
  cv::Mat qr, big, rgb;
  cv::QRCodeEncoder::create ()->encode (payload, qr);
  cv::resize (qr, big, cv::Size (side_px, side_px), 0, 0, cv::INTER_NEAREST);
  cv::cvtColor (big, rgb, cv::COLOR_GRAY2RGB);
  return rgb;
}

// The modules of the EAN-13 symbol for "4006381333931" (1 = bar).
inline std::vector<int>
ean13_modules ()
{
  static const char *L[] = {"0001101", "0011001", "0010011", "0111101", "0100011",
                            "0110001", "0101111", "0111011", "0110111", "0001011"};
  static const char *G[] = {"0100111", "0110011", "0011011", "0100001", "0011101",
                            "0111001", "0000101", "0010001", "0001001", "0010111"};
  static const char *R[] = {"1110010", "1100110", "1101100", "1000010", "1011100",
                            "1001110", "1010000", "1000100", "1001000", "1110100"};
  static const char *parity[]
      = {"LLLLLL", "LLGLGG", "LLGGLG", "LLGGGL", "LGLLGG", "LGGLLG", "LGGGLL", "LGLGLG", "LGLGGL", "LGGLGL"};
  const std::string code = "4006381333931";
  std::string bits = "101";
  for (int i = 1; i <= 6; i++) {
    int d = code[i] - '0';
    bits += parity[code[0] - '0'][i - 1] == 'L' ? L[d] : G[d];
  }
  bits += "01010";
  for (int i = 7; i <= 12; i++)
    bits += R[code[i] - '0'];
  bits += "101";
  std::vector<int> m;
  for (char c : bits)
    m.push_back (c == '1');
  return m;
}

// That symbol, `module_px` per module and bars `height_px` tall, on white
// with a quiet zone of 10 modules at the sides and 5 above and below
// (8-bit RGB).
inline cv::Mat
ean13_symbol (int module_px, int height_px)
{
  const std::vector<int> m = ean13_modules ();
  const int quiet = 10 * module_px;
  cv::Mat img (height_px + quiet, (int)m.size () * module_px + 2 * quiet, CV_8UC3,
               cv::Scalar (255, 255, 255));
  for (size_t i = 0; i < m.size (); i++)
    if (m[i])
      img (cv::Rect (quiet + (int)i * module_px, quiet / 2, module_px, height_px))
          .setTo (cv::Scalar (25, 25, 30));
  return img;
}

// `rgb` turned by `angle_deg` about its centre onto a white square canvas
// that holds it whole at any angle.
inline cv::Mat
turned_on_white (const cv::Mat &rgb, double angle_deg)
{
  const int side = (int)std::ceil (std::hypot (rgb.cols, rgb.rows)) + 4;
  cv::Mat rot = cv::getRotationMatrix2D (cv::Point2f (rgb.cols / 2.0f, rgb.rows / 2.0f), angle_deg, 1.0);
  rot.at<double> (0, 2) += (side - rgb.cols) / 2.0;
  rot.at<double> (1, 2) += (side - rgb.rows) / 2.0;
  cv::Mat turned;
  cv::warpAffine (rgb, turned, rot, cv::Size (side, side), cv::INTER_LINEAR, cv::BORDER_CONSTANT,
                  cv::Scalar (255, 255, 255));
  return turned;
}

} // namespace livemicro::test
