// Device-to-device copies of many segments in one launch (a table of them instead of a copy call
// each): the prompt rows a frozen reference keeps, gathered into one decoding cache.
#include "common.cuh"

// For each segment s < S: dst_s[0..len_s) = src_s[0..len_s), where table (3S) holds the
// destination addresses, then the source addresses, then the lengths in floats. Grid (S, Y):
// the Y blocks of a segment stride over it together.
extern "C" __global__ void copy_segments(const unsigned long long* table, int S) {
    int s = blockIdx.x;
    float* dst = reinterpret_cast<float*>(table[s]);
    const float* src = reinterpret_cast<const float*>(table[S + s]);
    long n = (long)table[2 * S + s];
    long stride = (long)gridDim.y * blockDim.x;
    for (long i = (long)blockIdx.y * blockDim.x + threadIdx.x; i < n; i += stride) dst[i] = src[i];
}
