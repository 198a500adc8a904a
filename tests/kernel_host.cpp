// Host-side harness: loops the kernel functions of kernels/weightmap.cuh over arrays so the
// tests can call the very same code through ctypes and compare it with the numpy reference.
#include "weightmap.cuh"

extern "C" {

void wm_uncertainty_array(const float* distance, float* out, long long n, float inv_two_sigma_sq)
{
    for (long long i = 0; i < n; ++i) {
        out[i] = wm_uncertainty(distance[i], inv_two_sigma_sq);
    }
}

void wm_weight_array(const long long* labels, const float* distance, float* out, long long n,
                     const float* class_weight, long long num_labels, float inv_two_sigma_sq,
                     long long ignore_label)
{
    for (long long i = 0; i < n; ++i) {
        out[i] = wm_weight(labels[i], distance[i], class_weight, num_labels, inv_two_sigma_sq, ignore_label);
    }
}

}
