// Deliberately broken (kept out of kernels/): a warp shuffle whose mask leaves out the lanes it
// then reads from.
extern "C" __global__ void shuffle_outside_mask(float* out) {
    float v = (float)threadIdx.x;
    out[threadIdx.x] = __shfl_xor_sync(0x0000ffffu, v, 16);
}
