// Per-pixel weight-map math of weightmaps, written once for the host and the device.
//
//   delta(d) = 1 - exp(-d^2 / (2 sigma^2))          labelling uncertainty (Bressan et al. 2021)
//   w(x)     = phi[label(x)] * delta(d(x))           the final weight; 0 on the ignore label
//
// The GPU path puts this file into CuPy ElementwiseKernels as their preamble (NVRTC defines
// __CUDACC__); the test suite compiles the same file with g++ and calls it through ctypes,
// and compiles it with nvcc as a check. Keep it free of host-only headers under NVRTC.
//
// Precision (issue 20, weightmaps/precision.py): the distance comes from a float32 transform run
// on a grid where its d^2 is exact; everything after it is double and rounded once to float.
// Double maths should cost nothing here (expected, not yet measured on a device): the weight
// kernel is memory-bound, 9 bytes a pixel (a 4096^2 map: 151 MB in 119 us on an H100, 1266 GB/s),
// while its ~40 double operations a pixel (expm1's polynomial most of them) are 0.67 GFLOP, ~20 us
// of an H100's 34 TFLOP/s of FP64, overlapped with the memory traffic.
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

// d^2 from a transform's float32 d. On a short grid (weightmaps.precision.square_grid: the
// transform's exact d^2 are multiples of `grid`, a power of two) cuCIM returns d = RN(sqrt(n g)),
// so d*d, exact in double, is within n g 2^-23 of n g: below 2^21 grid steps that is under a
// quarter step, and rounding to the grid gives n g exactly. grid = 0: no grid, d*d as it is.
// d = +inf stays +inf.
__host__ __device__ inline double wm_square(float distance, double grid)
{
    double square = (double)distance * (double)distance;
    if (grid > 0.0 && square < grid * 2097152.0) {
        square = rint(square / grid) * grid;
    }
    return square;
}

// delta written as -expm1(-x), x = d^2 * factor (factor = d^2 -> d^2 / (2 sigma^2) for the
// transform's units): near an edge x is tiny and 1 - exp(-x) would cancel. d = +inf (no edge
// anywhere) gives exactly 1, d = 0 exactly 0.
__host__ __device__ inline double wm_uncertainty(float distance, double factor, double grid)
{
    return -expm1(-wm_square(distance, grid) * factor);
}

// `class_weight` has `num_labels` entries indexed by label; callers have already checked that
// every label of the mask has an entry, so the NaN branch only guards against misuse and makes
// it visible in the output. `ignore_label` is -1 when the mask has none (labels are >= 0).
// phi * delta is rounded once, to float.
__host__ __device__ inline float wm_weight(long long label, float distance,
                                           const double* class_weight, long long num_labels,
                                           double factor, double grid, long long ignore_label)
{
    if (label == ignore_label) {
        return 0.0f;
    }
    if (label < 0 || label >= num_labels) {
        return 0.0f / 0.0f;
    }
    return (float)(class_weight[label] * wm_uncertainty(distance, factor, grid));
}
