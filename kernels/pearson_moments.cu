// Shifted moments of two column blocks for a one-pass Pearson r per column (sum a, sum b, sum a^2,
// sum b^2, sum ab, each relative to row 0 so that large means do not cancel). float64 sums.
// Loaded by braintune_dist/ridge/kernels.py (CuPy RawModule, compiled on first use).
#define ROWS 64
template<typename T>
__global__ void pearson_moments(const T* A, long long lda, const T* B, long long ldb,
                                double* m, long long n, long long v) {
    long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= v) return;
    long long r0 = (long long)blockIdx.y * ROWS, r1 = min(r0 + ROWS, n);
    double ka = (double)A[j], kb = (double)B[j];          // shift = row 0
    double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
    for (long long i = r0; i < r1; ++i) {
        double x = (double)A[i * lda + j] - ka, y = (double)B[i * ldb + j] - kb;
        sa += x; sb += y; saa += x * x; sbb += y * y; sab += x * y;
    }
    atomicAdd(m + j, sa); atomicAdd(m + v + j, sb); atomicAdd(m + 2 * v + j, saa);
    atomicAdd(m + 3 * v + j, sbb); atomicAdd(m + 4 * v + j, sab);
}
