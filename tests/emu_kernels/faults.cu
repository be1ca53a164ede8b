// Deliberately broken (kept out of kernels/): faults a GPU reports vaguely or not at all.

// An integer division by a zero the host passes in.
extern "C" __global__ void divide_by_zero(int* out, int d) {
    out[threadIdx.x] = 100 / d;
}

// Recursion deeper than a thread's stack: each level keeps a 2 KiB frame alive across its call.
__device__ int deep(int n, volatile char* trail) {
    volatile char frame[2048];
    frame[0] = (char)n;
    trail[0] = frame[0];
    if (n == 0) return 0;
    return deep(n - 1, frame) + frame[1];
}

extern "C" __global__ void recurse_too_deep(int* out, int n) {
    volatile char top[16];
    out[threadIdx.x] = deep(n, top);
}
