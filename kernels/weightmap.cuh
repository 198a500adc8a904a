// Per-pixel weight-map math of weightmaps, written once for the host and the device.
//
//   delta(d) = 1 - exp(-d^2 / (2 sigma^2))          labelling uncertainty (Bressan et al. 2021)
//   w(x)     = phi[label(x)] * delta(d(x))           the final weight; 0 on the ignore label
//
// The GPU path puts this file into a CuPy ElementwiseKernel as its preamble (NVRTC defines
// __CUDACC__); the test suite compiles the same file with g++ and calls it through ctypes,
// and compiles it with nvcc as a check. Keep it free of host-only headers under NVRTC.
#pragma once

#if !defined(__CUDACC__)
#include <math.h>
#ifndef __host__
#define __host__
#endif
#ifndef __device__
#define __device__
#endif
#endif

// delta written as -expm1(-x): near an edge x = d^2 / (2 sigma^2) is tiny and 1 - exp(-x)
// would cancel to a few bits in float32. d = +inf (no edge anywhere) gives exactly 1.
__host__ __device__ inline float wm_uncertainty(float distance, float inv_two_sigma_sq)
{
    return -expm1f(-(distance * distance) * inv_two_sigma_sq);
}

// `class_weight` has `num_labels` entries indexed by label; callers have already checked that
// every label of the mask has an entry, so the NaN branch only guards against misuse and makes
// it visible in the output. `ignore_label` is -1 when the mask has none (labels are >= 0).
__host__ __device__ inline float wm_weight(long long label, float distance,
                                           const float* class_weight, long long num_labels,
                                           float inv_two_sigma_sq, long long ignore_label)
{
    if (label == ignore_label) {
        return 0.0f;
    }
    if (label < 0 || label >= num_labels) {
        return 0.0f / 0.0f;
    }
    return class_weight[label] * wm_uncertainty(distance, inv_two_sigma_sq);
}
