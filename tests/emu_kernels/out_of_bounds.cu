// Deliberately broken (kept out of kernels/): the bounds check is missing, so the threads of the
// last block past `n` write beyond the end of `out`.
extern "C" __global__ void fill_without_bounds_check(float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i] = (float)n;
}
