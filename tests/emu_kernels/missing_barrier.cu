// Deliberately broken (kept out of kernels/): each block reverses its slice of `in` through shared
// memory, and the barrier between the writes and the reads is missing. A thread that runs before
// its partner has written reads shared memory nobody wrote.
extern "C" __global__ void reverse_without_barrier(float* out, const float* in) {
    __shared__ float tile[256];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    tile[threadIdx.x] = in[i];
    out[i] = tile[blockDim.x - 1 - threadIdx.x];
}

// The same with its barrier: correct under any schedule.
extern "C" __global__ void reverse_with_barrier(float* out, const float* in) {
    __shared__ float tile[256];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    tile[threadIdx.x] = in[i];
    __syncthreads();
    out[i] = tile[blockDim.x - 1 - threadIdx.x];
}
