// Deterministic hashing, random numbers and band-limited value noise for the
// generated slide.  Everything is a pure function of (seed, coordinates).
#pragma once

#include <cmath>
#include <cstdint>

namespace livemicro::hw::sim {

inline uint64_t
mix64 (uint64_t z)
{
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline uint64_t
hash3 (uint64_t seed, int64_t a, int64_t b)
{
  return mix64 (seed
                ^ mix64 (static_cast<uint64_t> (a) * 0x9E3779B1ULL
                         ^ mix64 (static_cast<uint64_t> (b) + 0x632BE5ABULL)));
}

// [0, 1) from the top 24 bits of a hash.
inline float
unit_from_hash (uint64_t h)
{
  return static_cast<float> (h >> 40) * (1.0f / 16777216.0f);
}

class Rng {
public:
  explicit Rng (uint64_t seed) : state_ (mix64 (seed)) {}
  uint64_t next () { return mix64 (state_ += 0x9e3779b97f4a7c15ULL); }
  double uniform () { return static_cast<double> (next () >> 11) * 0x1.0p-53; }
  double uniform (double lo, double hi) { return lo + (hi - lo) * uniform (); }
  double normal ()
  {
    double u1 = uniform (), u2 = uniform ();
    if (u1 < 1e-300)
      u1 = 1e-300;
    return std::sqrt (-2.0 * std::log (u1)) * std::cos (6.283185307179586 * u2);
  }

private:
  uint64_t state_;
};

inline float
smoothstep (float e0, float e1, float x)
{
  float t = (x - e0) / (e1 - e0);
  t = t < 0 ? 0 : (t > 1 ? 1 : t);
  return t * t * (3 - 2 * t);
}

// A fast 32-bit lattice hash for per-pixel textures (lattice coordinates of
// a 75 mm slide fit in 32 bits down to sub-micrometre wavelengths).
inline float
lattice_value (uint32_t seed, int32_t x, int32_t y)
{
  uint32_t h = seed ^ (static_cast<uint32_t> (x) * 0x8da6b343u) ^ (static_cast<uint32_t> (y) * 0xd8163841u);
  h ^= h >> 15;
  h *= 0x2c1b3c6du;
  h ^= h >> 12;
  h *= 0x297a2d39u;
  h ^= h >> 15;
  return static_cast<float> (h >> 8) * (1.0f / 16777216.0f);
}

// Value noise in [0, 1) on an integer lattice, smooth between lattice points.
inline float
value_noise (uint64_t seed, double x, double y)
{
  double fx = std::floor (x), fy = std::floor (y);
  int32_t ix = static_cast<int32_t> (fx), iy = static_cast<int32_t> (fy);
  float tx = static_cast<float> (x - fx), ty = static_cast<float> (y - fy);
  tx = tx * tx * (3 - 2 * tx);
  ty = ty * ty * (3 - 2 * ty);
  const uint32_t s = static_cast<uint32_t> (seed ^ (seed >> 32));
  float v00 = lattice_value (s, ix, iy);
  float v10 = lattice_value (s, ix + 1, iy);
  float v01 = lattice_value (s, ix, iy + 1);
  float v11 = lattice_value (s, ix + 1, iy + 1);
  float a = v00 + (v10 - v00) * tx;
  float b = v01 + (v11 - v01) * tx;
  return a + (b - a) * ty;
}

// Weight of a noise octave of `wavelength_px` pixels: 1 when well resolved,
// fading to 0 below ~2 px so that coarse views do not alias.
inline float
octave_weight (double wavelength_px)
{
  return smoothstep (1.5f, 3.5f, static_cast<float> (wavelength_px));
}

} // namespace livemicro::hw::sim
