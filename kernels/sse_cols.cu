// Validation error of one ridge alpha per column: out[j] += sum_i (P[i, j] - Y[i, j])^2, float64 sums.
// Loaded by braintune_dist/ridge/kernels.py (CuPy RawModule, compiled on first use).
// One thread per column j, blockIdx.y picks a chunk of ROWS rows; float64 partial sums are
// atomically added to out[j]. Row strides (ld*) let inputs be row/column slices of bigger arrays;
// adjacent threads read adjacent columns, so every load is coalesced.
#define ROWS 64
template<typename T>
__global__ void sse_cols(const T* P, long long ldp, const T* Y, long long ldy,
                         double* out, long long n, long long v) {
    long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= v) return;
    long long r0 = (long long)blockIdx.y * ROWS, r1 = min(r0 + ROWS, n);
    double acc = 0.0;
    for (long long i = r0; i < r1; ++i) {
        double d = (double)P[i * ldp + j] - (double)Y[i * ldy + j];
        acc += d * d;
    }
    atomicAdd(out + j, acc);
}
