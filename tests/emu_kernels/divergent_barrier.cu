// Deliberately broken (kept out of kernels/): half of each block leaves before a barrier that the
// other half waits at. On a GPU this may hang or pass by luck; it is undefined behaviour.
extern "C" __global__ void half_leave_before_barrier(float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (threadIdx.x >= blockDim.x / 2) return;
    __syncthreads();
    if (i < n) out[i] = 1.0f;
}
