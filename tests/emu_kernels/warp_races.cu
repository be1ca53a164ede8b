// Deliberately broken (kept out of kernels/): races between warps that shuffling single threads
// does not expose, because warp collectives hold one side back for several passes of the
// scheduler. Each kernel has a guarded twin with the barrier in place. Blocks of 256 threads.

// The sum of `v` over the block, through a shared array of one partial sum per warp that the
// next call reuses. Without the last barrier a warp that has read the partial sums can start the
// next call and overwrite its entry before another warp has read it: a write after a read.
__device__ float block_total(float v, bool guard) {
    __shared__ float part[8];
    int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) part[w] = v;
    __syncthreads();
    float t = 0.0f;
    for (int i = 0; i < 8; i++) t += part[i];
    if (guard) __syncthreads();
    return t;
}

// out[i] = the block's sum of x, times 1000, plus the block's sum of y
__device__ void two_totals(float* out, const float* x, const float* y, bool guard) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float a = block_total(x[i], guard);
    float b = block_total(y[i], guard);
    out[i] = a * 1000.0f + b;
}

extern "C" __global__ void write_after_read(float* out, const float* x, const float* y) {
    two_totals(out, x, y, false);
}

extern "C" __global__ void write_after_read_guarded(float* out, const float* x, const float* y) {
    two_totals(out, x, y, true);
}

// Warp 0 publishes x in a shared array; every other warp first sums y over its lanes, then reads
// the array. Without the barrier between the write and the reads, a warp that runs before warp 0
// reads shared memory nobody wrote: a read before the write.
__device__ void publish_then_read(float* out, const float* x, const float* y, bool guard) {
    __shared__ float published[32];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int lane = threadIdx.x % 32;
    if (threadIdx.x < 32) published[lane] = x[blockIdx.x * blockDim.x + lane];
    float s = y[i];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (guard) __syncthreads();
    out[i] = s + published[31 - lane];
}

extern "C" __global__ void read_before_write(float* out, const float* x, const float* y) {
    publish_then_read(out, x, y, false);
}

extern "C" __global__ void read_before_write_guarded(float* out, const float* x, const float* y) {
    publish_then_read(out, x, y, true);
}
