// Branch-free exp / log1p / softplus / sigmoid that compilers vectorise.
//
// Calls into libm keep a loop scalar; these polynomial forms let the
// compiler emit SIMD code. The float versions are accurate to a few ulp over
// the ranges the kernels use; double keeps libm, since gradcheck in float64
// needs full double accuracy and float32 is the fast path.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

// Hot loops are compiled for x86-64-v4 (AVX-512), v3 (AVX2, FMA) and the baseline ISA;
// the loader picks by CPU features at run time, so one binary stays portable.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define GENVAR_TARGET_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GENVAR_TARGET_CLONES
#endif

// Force inlining so the helpers are compiled for the caller's target clone.
#if defined(__GNUC__)
#define GENVAR_INLINE inline __attribute__((always_inline))
#else
#define GENVAR_INLINE inline
#endif

namespace genvar::cpu {

// exp(y) for y <= 0; exactly 0 below -87 (so -inf gives 0), NaN stays NaN.
// Cody-Waite reduction to r in [-ln2/2, ln2/2], a degree-6 polynomial, then
// scaling by 2^n.
GENVAR_INLINE float exp_nonpositive(float input) {
  const float y = input < -87.0f ? -87.0f : input;  // keeps 2^n a normal float
  // Adding and removing 1.5 * 2^23 rounds to the nearest integer without a
  // libm call (exact while |y * log2(e)| < 2^22, far beyond the clamp).
  const float round_magic = 12582912.0f;
  const float n = (y * 1.44269504088896341f + round_magic) - round_magic;
  float r = y - n * 0.693145751953125f;
  r = r - n * 1.428606765330187045e-06f;
  float poly = 1.0f / 720.0f;
  poly = poly * r + 1.0f / 120.0f;
  poly = poly * r + 1.0f / 24.0f;
  poly = poly * r + 1.0f / 6.0f;
  poly = poly * r + 0.5f;
  poly = poly * r + 1.0f;
  poly = poly * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return input < -87.0f ? 0.0f : poly * scale;
}

// exp(y) for any y, the exp_nonpositive polynomial with 2^n split in two
// factors so that n = 128 (y up to ln FLT_MAX) stays finite: +inf above
// 88.7228, exactly 0 below -87 (true values under 1.7e-38), NaN stays NaN.
GENVAR_INLINE float exp_any(float input) {
  const float y = input < -87.0f ? -87.0f : (input > 88.72283f ? 88.72283f : input);
  const float round_magic = 12582912.0f;
  const float n = (y * 1.44269504088896341f + round_magic) - round_magic;
  float r = y - n * 0.693145751953125f;
  r = r - n * 1.428606765330187045e-06f;
  float poly = 1.0f / 720.0f;
  poly = poly * r + 1.0f / 120.0f;
  poly = poly * r + 1.0f / 24.0f;
  poly = poly * r + 1.0f / 6.0f;
  poly = poly * r + 0.5f;
  poly = poly * r + 1.0f;
  poly = poly * r + 1.0f;
  const float high = n > 127.0f ? 1.0f : 0.0f;  // n = 128: 2^127 * 2
  const int32_t bits = (static_cast<int32_t>(n - high) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const float result = poly * scale * (1.0f + high);
  return input < -87.0f ? 0.0f : (input > 88.72283f ? __builtin_inff() : result);
}

// log1p(t) for t in [0, 1] as 2 atanh(s) with s = t / (2 + t) in [0, 1/3]:
// no cancellation for tiny t, and the odd series to s^15 is below float
// rounding on that range.
GENVAR_INLINE float atanh_series(float s) {
  const float s2 = s * s;
  float series = 1.0f / 15.0f;
  series = series * s2 + 1.0f / 13.0f;
  series = series * s2 + 1.0f / 11.0f;
  series = series * s2 + 1.0f / 9.0f;
  series = series * s2 + 1.0f / 7.0f;
  series = series * s2 + 1.0f / 5.0f;
  series = series * s2 + 1.0f / 3.0f;
  series = series * s2 + 1.0f;
  return 2.0f * s * series;
}

GENVAR_INLINE float log1p_unit(float t) { return atanh_series(t / (2.0f + t)); }

template <typename scalar_t>
struct Math;

template <>
struct Math<float> {
  // softplus(l) = max(l, 0) + log1p(exp(-|l|)), stable for any l.
  static GENVAR_INLINE float softplus(float logit) {
    const float abs_logit = std::fabs(logit);
    return (logit > 0.0f ? logit : 0.0f) + log1p_unit(exp_nonpositive(-abs_logit));
  }
  static GENVAR_INLINE float sigmoid(float logit) {
    const float e = exp_nonpositive(-std::fabs(logit));
    // numerator 1 for logit >= 0 and e below, written as arithmetic so the
    // loop stays free of branches
    const float numerator = e + static_cast<float>(logit >= 0.0f) * (1.0f - e);
    return numerator / (1.0f + e);
  }
  // Both at once for the fused forward-and-gradient pass: one exp and one
  // division, since 1/(1+e) and 1/(2+e) both follow from 1/((1+e)(2+e)).
  static GENVAR_INLINE void softplus_sigmoid(float logit, float& softplus, float& sigmoid) {
    const float e = exp_nonpositive(-std::fabs(logit));
    const float one_plus = 1.0f + e, two_plus = 2.0f + e;
    const float inverse = 1.0f / (one_plus * two_plus);
    softplus = (logit > 0.0f ? logit : 0.0f) + atanh_series(e * one_plus * inverse);
    const float numerator = e + static_cast<float>(logit >= 0.0f) * (1.0f - e);
    sigmoid = numerator * two_plus * inverse;
  }
  static GENVAR_INLINE float exp(float value) { return std::exp(value); }
  static GENVAR_INLINE float exp_any(float value) { return cpu::exp_any(value); }
};

template <>
struct Math<double> {
  static GENVAR_INLINE void softplus_sigmoid(double logit, double& softplus, double& sigmoid) {
    softplus = Math<double>::softplus(logit);
    sigmoid = Math<double>::sigmoid(logit);
  }
  static GENVAR_INLINE double softplus(double logit) {
    return (logit > 0.0 ? logit : 0.0) + std::log1p(std::exp(-std::fabs(logit)));
  }
  static GENVAR_INLINE double sigmoid(double logit) {
    const double e = std::exp(-std::fabs(logit));
    return logit >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
  }
  static GENVAR_INLINE double exp(double value) { return std::exp(value); }
  static GENVAR_INLINE double exp_any(double value) { return std::exp(value); }
};

}  // namespace genvar::cpu
