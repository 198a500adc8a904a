// Host-side harness: loops the kernel functions of kernels/weightmap.cuh over arrays so the
// tests can call the very same code through ctypes and compare it with the numpy reference.
#include "weightmap.cuh"

extern "C" {

void wm_square_array(const float* distance, double* out, long long n, double grid)
{
    for (long long i = 0; i < n; ++i) {
        out[i] = wm_square(distance[i], grid);
    }
}

void wm_uncertainty_array(const float* distance, double* out, long long n, double factor, double grid)
{
    for (long long i = 0; i < n; ++i) {
        out[i] = wm_uncertainty(distance[i], factor, grid);
    }
}

void wm_weight_array(const long long* labels, const float* distance, float* out, long long n,
                     const double* class_weight, long long num_labels, double factor, double grid,
                     long long ignore_label)
{
    for (long long i = 0; i < n; ++i) {
        out[i] = wm_weight(labels[i], distance[i], class_weight, num_labels, factor, grid, ignore_label);
    }
}

}
