// livemicro::analysis — the learned nucleus model (OpenCV DNN, ONNX).
//
// A small U-Net trained by scripts/train-nuclei on the shared MoNuSeg tiles
// (docs/analysis.md, "The nucleus model"): it sees RGB at kModelUmPerPx and predicts
// per pixel the probability of nucleus and the distance to the nucleus edge
// normalised to 1 at each nucleus's centre.  nuclei.cpp turns these into
// instances with a marker-controlled watershed.
//
// Plain C++, no GObject.  One NucleusModel per thread (cv::dnn::Net is not
// re-entrant); loading takes a few tens of milliseconds.  The file is read
// once, at load: its bytes (under 2 MB) stay in memory, so that
// release_buffers () rebuilds the network without touching the file again.
#pragma once

#include <opencv2/core.hpp>

#include <array>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

namespace livemicro::analysis {

// The resolution the model was trained at and always runs at: every frame
// is resampled to it, whatever the objective.
constexpr double kModelUmPerPx = 0.5;
// Frames coarser than this are refused (quality low_resolution): below a 10x
// objective a nucleus is under ~4 px across, and the model was trained only
// on frames from 0.5 µm/px down to 1 µm/px enlarged to 0.5 (augmentation).
constexpr double kModelMaxUmPerPx = 1.05;

// A model file that is missing, unreadable or not a LiveMicro nucleus
// model.  what() names the file and says what to do.
class ModelError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

// Asked between the model's tiles whether the caller still wants the
// result (a frame nobody will see any more): true gives up the frame.
using StopRequested = std::function<bool ()>;

// Thrown when a StopRequested said stop: the frame was given up, not failed.
class AnalysisStopped : public std::runtime_error {
public:
  AnalysisStopped () : std::runtime_error ("the analysis of the frame was given up") {}
};

// Where the model is looked for when no path is given:
// $LIVEMICRO_NUCLEI_MODEL (set by `meson devenv` and the tests to the file in
// the source tree), else the installed copy
// <datadir>/livemicro/models/nuclei.onnx.
std::string default_model_path ();

// Whether NucleusModel::predict takes this many test-time augmentation
// copies: 1 (none), 2, 4 or 8.
bool valid_augmentation_copies (int copies);

class NucleusModel {
public:
  // Loads and checks the model (a probe inference on a small image); throws
  // ModelError.  An empty path means default_model_path ().
  static std::unique_ptr<NucleusModel> load (const std::string &path = "");
  ~NucleusModel ();
  NucleusModel (const NucleusModel &) = delete;
  NucleusModel &operator= (const NucleusModel &) = delete;

  const std::string &path () const { return path_; }

  // Runs the model on an 8-bit image already at kModelUmPerPx (3 or 4
  // channels, `rgb` = indices of R, G, B).  Fills `foreground` and
  // `distance` (CV_32F, the image's size, values 0..1).  Large images are
  // processed in overlapping tiles, so memory stays bounded.  Deterministic.
  // Test-time augmentation: `copies` > 1 runs the network also on flipped
  // and rotated copies of each tile (2: + mirrored left-right; 4: + upside
  // down and both; 8: + the four that swap the sides), turns each output
  // back and averages the logits; `copies` times the network's CPU.
  // Throws std::invalid_argument unless valid_augmentation_copies (copies).
  // `stop`, when set, is asked before each tile and each augmented copy
  // (a 1080p frame at 20x is four tiles of ~0.3 s of CPU each; one at 40x,
  // resampled to 960x540, is one pass); when it says so, predict () throws
  // AnalysisStopped and its outputs are undefined.
  void predict (const cv::Mat &image, std::array<int, 3> rgb, cv::Mat &foreground, cv::Mat &distance,
                int copies = 1, const StopRequested &stop = {});

  // Gives back the memory predict () allocated (the network's layer
  // buffers, tens of MB for a 720p frame, and the input copies) by
  // rebuilding the network from the bytes read at load; the next predict ()
  // allocates them again and gives the same output.  Never reads the file,
  // so a file removed or damaged since load cannot break a running model.
  // Not while predict () runs (same thread, or the caller's lock).
  void release_buffers ();

private:
  NucleusModel ();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
};

} // namespace livemicro::analysis
