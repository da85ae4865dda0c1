// The learned nucleus model through OpenCV's DNN module: loading with a
// clear error, tiling, RGB/255 NCHW input, optional test-time augmentation
// (mean logits over flipped/rotated copies), bilinear x2 upsampling and
// sigmoid of the two output maps.  See nuclei_model.h.
#include "livemicro/analysis/nuclei_model.h"

#include <opencv2/dnn.hpp>
#include <opencv2/imgproc.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#ifndef LIVEMICRO_MODEL_DIR
#define LIVEMICRO_MODEL_DIR "/usr/local/share/livemicro/models"
#endif

namespace livemicro::analysis {

namespace {

constexpr int kStride = 16; // input sides must be multiples of this
constexpr int kTile = 1024; // tile side (input pixels) for large images
constexpr int kMargin = 32; // context kept around each tile's core
constexpr const char *kWhatToDo = "run scripts/train-nuclei to make it, point model-location (livemicroctl: "
                                  "$LIVEMICRO_NUCLEI_MODEL) at a good copy, or use method=classical";

int
round_up (int v, int m)
{
  return (v + m - 1) / m * m;
}

// The eight symmetries of a square, in the order test-time augmentation
// adds them: the three that keep the sides (so 2 and 4 copies run the
// network at one input shape), then the four that swap them.
enum Dihedral { kIdentity, kFlipX, kFlipY, kRotate180, kTranspose, kRotate90, kRotate270, kAntiTranspose };

// dst = transform t of src (undo: its inverse).  Sides that were multiples
// of kStride stay so, and a logit map (half the input's size) transforms
// exactly as its input did.
void
dihedral (const cv::Mat &src, cv::Mat &dst, int t, bool undo)
{
  switch (t) {
  case kIdentity:
    src.copyTo (dst);
    break;
  case kFlipX:
    cv::flip (src, dst, 1);
    break;
  case kFlipY:
    cv::flip (src, dst, 0);
    break;
  case kRotate180:
    cv::flip (src, dst, -1);
    break;
  case kTranspose:
    cv::transpose (src, dst);
    break;
  case kRotate90:
  case kRotate270:
    cv::rotate (src, dst,
                (t == kRotate90) != undo ? cv::ROTATE_90_CLOCKWISE : cv::ROTATE_90_COUNTERCLOCKWISE);
    break;
  default: { // kAntiTranspose, its own inverse
    cv::Mat tr;
    cv::transpose (src, tr);
    cv::flip (tr, dst, -1);
  }
  }
}

} // namespace

std::string
default_model_path ()
{
  const char *env = std::getenv ("LIVEMICRO_NUCLEI_MODEL");
  if (env && *env)
    return env;
  return std::string (LIVEMICRO_MODEL_DIR) + "/nuclei.onnx";
}

struct NucleusModel::Impl {
  std::vector<uchar> onnx; // the file's bytes, read once
  cv::dnn::Net net;
  cv::Mat blob, pad;
  // A network built from `onnx`, with nothing allocated yet; throws
  // cv::Exception or ModelError.
  void build ()
  {
    net = cv::dnn::readNetFromONNX (onnx);
    if (net.empty ())
      throw ModelError ("empty network");
    net.setPreferableBackend (cv::dnn::DNN_BACKEND_OPENCV);
    net.setPreferableTarget (cv::dnn::DNN_TARGET_CPU);
  }
  // Runs the network on `image` (sides multiples of kStride); logits at
  // half resolution into out[0..1].
  void run (const cv::Mat &image, std::array<int, 3> rgb, cv::Mat out[2])
  {
    const int h = image.rows, w = image.cols;
    const int dims[4] = {1, 3, h, w};
    blob.create (4, dims, CV_32F);
    for (int c = 0; c < 3; c++) {
      cv::Mat plane (h, w, CV_32F, blob.ptr<float> (0, c));
      cv::Mat ch;
      cv::extractChannel (image, ch, rgb[c]);
      ch.convertTo (plane, CV_32F, 1.0 / 255.0);
    }
    net.setInput (blob);
    cv::Mat o = net.forward ();
    if (o.dims != 4 || o.size[0] != 1 || o.size[1] != 2 || o.size[2] * 2 != h || o.size[3] * 2 != w)
      throw ModelError ("the nucleus model gave an output of an unexpected shape");
    for (int k = 0; k < 2; k++)
      out[k] = cv::Mat (o.size[2], o.size[3], CV_32F, o.ptr<float> (0, k)).clone ();
  }
  // run () on `image` and its first `copies` dihedral transforms, each
  // output transformed back; the mean logits into out[0..1] (summed in a
  // fixed order: deterministic).  copies = 1 is run () itself.
  void run_augmented (const cv::Mat &image, std::array<int, 3> rgb, int copies, cv::Mat out[2],
                      const StopRequested &stop)
  {
    if (stop && stop ())
      throw AnalysisStopped ();
    if (copies == 1) {
      run (image, rgb, out);
      return;
    }
    cv::Mat one[2], back;
    for (int t = 0; t < copies; t++) {
      if (t > 0 && stop && stop ())
        throw AnalysisStopped ();
      dihedral (image, turned, t, false);
      run (turned, rgb, one);
      for (int k = 0; k < 2; k++) {
        dihedral (one[k], back, t, true);
        if (t == 0)
          back.copyTo (out[k]);
        else
          out[k] += back;
      }
    }
    for (int k = 0; k < 2; k++)
      out[k] *= 1.0 / copies;
  }
  cv::Mat turned; // the transformed input of run_augmented ()
};

NucleusModel::NucleusModel () : impl_ (std::make_unique<Impl> ()) {}
NucleusModel::~NucleusModel () = default;

std::unique_ptr<NucleusModel>
NucleusModel::load (const std::string &given)
{
  const std::string path = given.empty () ? default_model_path () : given;
  std::unique_ptr<NucleusModel> m (new NucleusModel ());
  m->path_ = path;
  {
    std::ifstream f (path, std::ios::binary);
    if (!f)
      throw ModelError ("nucleus model '" + path + "' cannot be opened (" + std::strerror (errno)
                        + "): " + kWhatToDo);
    m->impl_->onnx.assign (std::istreambuf_iterator<char> (f), std::istreambuf_iterator<char> ());
    if (f.bad () || m->impl_->onnx.empty ())
      throw ModelError ("nucleus model '" + path + "' cannot be read ("
                        + (f.bad () ? "a read error" : "empty") + "): the file is corrupt or truncated; "
                        + kWhatToDo);
  }
  try {
    m->impl_->build ();
    // A probe: a LiveMicro nucleus model maps 3×32×32 to 2×16×16.
    cv::Mat probe (32, 32, CV_8UC3, cv::Scalar (200, 150, 200)), out[2];
    m->impl_->run (probe, {0, 1, 2}, out);
  } catch (const cv::Exception &e) {
    throw ModelError ("nucleus model '" + path + "' is not a model OpenCV can read (" + e.err
                      + "): the file is corrupt or truncated; " + kWhatToDo);
  } catch (const ModelError &e) {
    throw ModelError ("nucleus model '" + path + "' is not a LiveMicro nucleus model (" + e.what () + "); "
                      + kWhatToDo);
  }
  return m;
}

bool
valid_augmentation_copies (int copies)
{
  return copies == 1 || copies == 2 || copies == 4 || copies == 8;
}

void
NucleusModel::predict (const cv::Mat &image, std::array<int, 3> rgb, cv::Mat &foreground, cv::Mat &distance,
                       int copies, const StopRequested &stop)
{
  if (image.empty () || image.depth () != CV_8U || (image.channels () != 3 && image.channels () != 4))
    throw std::invalid_argument ("the nucleus model needs an 8-bit RGB image");
  if (!valid_augmentation_copies (copies))
    throw std::invalid_argument ("test-time augmentation takes 1, 2, 4 or 8 copies, not "
                                 + std::to_string (copies));
  const int w = image.cols, h = image.rows;
  foreground.create (h, w, CV_32F);
  distance.create (h, w, CV_32F);
  const int border = image.cols > 1 && image.rows > 1 ? cv::BORDER_REFLECT_101 : cv::BORDER_REPLICATE;
  cv::Mat logits[2], up;
  auto finish = [&] (const cv::Rect &core_in_tile, const cv::Rect &dst) {
    for (int k = 0; k < 2; k++) {
      cv::resize (logits[k], up, cv::Size (logits[k].cols * 2, logits[k].rows * 2), 0, 0, cv::INTER_LINEAR);
      cv::Mat core = up (core_in_tile), p;
      cv::exp (-core, p); // sigmoid
      p = 1.0 / (1.0 + p);
      p.copyTo ((k == 0 ? foreground : distance) (dst));
    }
  };
  const int pw = std::max (kStride, round_up (w, kStride));
  const int ph = std::max (kStride, round_up (h, kStride));
  if ((double)pw * ph <= 1.5 * kTile * kTile) {
    // One pass, padded by reflection to multiples of kStride.
    cv::copyMakeBorder (image, impl_->pad, 0, ph - h, 0, pw - w, border);
    impl_->run_augmented (impl_->pad, rgb, copies, logits, stop);
    finish (cv::Rect (0, 0, w, h), cv::Rect (0, 0, w, h));
    return;
  }
  // Tiles of kTile with kMargin of context; each keeps its core.
  const int step = kTile - 2 * kMargin;
  const int nx = (w + step - 1) / step, ny = (h + step - 1) / step;
  cv::copyMakeBorder (image, impl_->pad, kMargin, kMargin + ny * step - h, kMargin, kMargin + nx * step - w,
                      border);
  for (int ty = 0; ty < ny; ty++)
    for (int tx = 0; tx < nx; tx++) {
      cv::Rect in (tx * step, ty * step, kTile, kTile);
      impl_->run_augmented (impl_->pad (in), rgb, copies, logits, stop);
      cv::Rect dst (tx * step, ty * step, std::min (step, w - tx * step), std::min (step, h - ty * step));
      finish (cv::Rect (kMargin, kMargin, dst.width, dst.height), dst);
    }
}

void
NucleusModel::release_buffers ()
{
  // A network that has run holds every layer's output for the last input
  // size; only a new one holds nothing.  The bytes built a working network
  // at load, so this cannot fail for want of a file.
  impl_->build ();
  impl_->blob.release ();
  impl_->pad.release ();
  impl_->turned.release ();
}

} // namespace livemicro::analysis
