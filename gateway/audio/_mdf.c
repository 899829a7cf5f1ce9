/* The element-wise phases of the batched MDF echo canceller (gateway/audio/mdf_step.py), in C.
 *
 * The same arithmetic as the numpy kernels of gateway/audio/mdf_step.py (the reference: Speex
 * libspeexdsp/mdf.c, float build, two-path; J.-M. Valin, "On Adjusting the Learning Rate in
 * Frequency Domain Echo Cancellation With Double-Talk", IEEE TASLP 2007), on a pool's arrays in
 * place, by slot index. Between the phases, the transforms (mdf_rfft, mdf_irfft: _mdf_fft.h,
 * four rows at a time; or numpy's):
 *
 *   mdf_push_estimate  push the newest reference spectrum, Sxx, both filters' sum_k W_k X_k
 *   (irfft of the sums: the time-domain echo estimates)
 *   mdf_store_estimate write them to the pool's Y, YF (predict: a block in progress)
 *   mdf_errors         e, ef, the block sums, the two-path logic, e and y behind B zeros
 *   (rfft: the error's and the echo estimate's spectra)
 *   mdf_update         power spectra, leak, RER, the rates mu, proportions, the W update,
 *                      the rows to constrain (AUMDF: partition 0 and one other)
 *   (irfft, zero the second half, rfft)
 *   mdf_finish         the constrained rows back, the non-finite check, count + 1
 *
 * Layout (C order): complex64 arrays are float pairs; W, F, X [cap][K][B + 1], S [cap][3][B + 1],
 * P [cap][K], V [cap][11], D, Y, YF [cap][B] (float64), H [cap] (int64). C99 with GCC's vector
 * extensions (the FFT's lanes; SSE2 on x86-64, no -march needed), no numpy API: the Python side
 * (gateway/audio/mdf_native.py) passes pointers through ctypes. The module
 * init below only makes this file an importable extension (so that pip builds it).
 *
 * Build without -ffast-math: NaN must propagate (a non-finite filter resets its slot), and
 * nmax/nmin propagate it as numpy's maximum/minimum do.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_mdf_fft.h"

enum { PEY, PYY, LEAK, SUM_ADAPT, ADAPTED, COUNT, SXX, DAVG1, DAVG2, DVAR1, DVAR2, NV };

typedef struct {
    float *W, *F, *X;          /* complex64 [cap][K][f] */
    double *S, *P, *V, *D, *Y, *YF;
    int64_t *H;
    int64_t K, B, rate;
} mdf_pool;

#define MIN_LEAK 0.005
#define VAR1_UPDATE 0.5
#define VAR2_UPDATE 0.25
#define VAR_BACKTRACK 4.0

/* numpy's maximum / minimum: NaN in either gives NaN */
static inline double nmax(double a, double b) { return (a > b || a != a) ? a : b; }
static inline double nmin(double a, double b) { return (a < b || a != a) ? a : b; }

/* The ring index of the j-th newest reference spectrum of a slot whose newest is at h. */
static inline int64_t ring(int64_t h, int64_t j, int64_t k) { return h - j < 0 ? h - j + k : h - j; }

/* The sum of squares of a[n], in four interleaved partial sums (numpy sums pairwise: the same
 * to rounding; one chain of additions would cost its latency per element). */
static double sumsq(const double *a, int64_t n)
{
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int q = 0; q < 4; q++)
            s[q] += a[i + q] * a[i + q];
    for (; i < n; i++)
        s[0] += a[i] * a[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

/* The same for float32 squares (each rounded to float32, as numpy's, summed in float64). */
static double sumsqf(const float *a, int64_t n)
{
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int q = 0; q < 4; q++)
            s[q] += (double)(a[i + q] * a[i + q]);
    for (; i < n; i++)
        s[0] += (double)(a[i] * a[i]);
    return (s[0] + s[1]) + (s[2] + s[3]);
}

/* Whether all of a[n] are finite (no exponent of all ones: vectorizes, unlike a float test). */
static int all_finite(const float *a, int64_t n)
{
    uint32_t u, any = 0;
    for (int64_t i = 0; i < n; i++) {
        memcpy(&u, a + i, sizeof u);
        any |= (u & 0x7f800000u) == 0x7f800000u;
    }
    return !any;
}

/* zb += w x, zf += g x over f complex64 bins (interleaved re, im). */
static void cmac(float *restrict zb, float *restrict zf, const float *restrict w, const float *restrict g,
                 const float *restrict x, int64_t f)
{
    for (int64_t i = 0; i < 2 * f; i += 2) {
        const float xr = x[i], xi = x[i + 1];
        zb[i] += w[i] * xr - w[i + 1] * xi;
        zb[i + 1] += w[i] * xi + w[i + 1] * xr;
        zf[i] += g[i] * xr - g[i + 1] * xi;
        zf[i + 1] += g[i] * xi + g[i + 1] * xr;
    }
}

/* Pushes each row's newest spectrum spec [m][f] (complex128) into its slot's ring where shift,
 * writes Sxx (the newest half of newest [m][2B]: sum of squares) and the two filters' sums
 * Z [2m][f] (complex64: background rows 0..m-1, foreground m..2m-1; summed in complex64, where
 * numpy sums the complex64 products in complex128: within float32 rounding). */
void mdf_push_estimate(const mdf_pool *p, int64_t m, const int64_t *slots, const double *spec,
                       const uint8_t *shift, const double *newest, float *Z)
{
    const int64_t K = p->K, B = p->B, f = B + 1, kf = K * f;
    for (int64_t j = 0; j < m; j++) {
        const int64_t s = slots[j];
        int64_t h = p->H[s];
        if (shift[j]) {
            h = h + 1 == K ? 0 : h + 1;
            p->H[s] = h;
            float *x = p->X + 2 * (s * kf + h * f);
            const double *c = spec + 2 * j * f;
            for (int64_t i = 0; i < 2 * f; i++)
                x[i] = (float)c[i];
        }
        p->V[s * NV + SXX] = sumsq(newest + j * 2 * B + B, B);
        const float *W = p->W + 2 * s * kf, *F = p->F + 2 * s * kf, *X = p->X + 2 * s * kf;
        float *restrict zb = Z + 2 * j * f, *restrict zf = Z + 2 * (m + j) * f;
        memset(zb, 0, 2 * f * sizeof(float));
        memset(zf, 0, 2 * f * sizeof(float));
        for (int64_t k = 0; k < K; k++)  /* partition by partition, in order (as numpy's sum) */
            cmac(zb, zf, W + 2 * k * f, F + 2 * k * f, X + 2 * ring(h, k, K) * f, f);
    }
}

/* The echo estimates of a block in progress, from the inverse transforms R [2m][2B] (float32,
 * unscaled: times 2B), into the pool's Y and YF. */
void mdf_store_estimate(const mdf_pool *p, int64_t m, const int64_t *slots, const float *R)
{
    const int64_t B = p->B, n = 2 * B;
    for (int64_t j = 0; j < m; j++) {
        const int64_t s = slots[j];
        const float *rb = R + j * n + B, *rf = R + (m + j) * n + B;
        for (int64_t i = 0; i < B; i++) {
            p->Y[s * B + i] = (double)rb[i] * (double)n;
            p->YF[s * B + i] = (double)rf[i] * (double)n;
        }
    }
}

/* mdf.c's two-path logic on one slot's block sums (see mdf_step._two_path); returns 1 when the
 * foreground takes the background, -1 when the background restarts from the foreground. */
static int two_path(double *v, double see, double sff, double sdd)
{
    const double dbf = 10.0 + sdd, delta = sff - see;
    double *c = v + DAVG1;
    c[0] = c[0] * 0.6 + delta * 0.4;
    c[1] = c[1] * 0.85 + delta * 0.15;
    c[2] = c[2] * 0.36 + (sff * 0.16) * dbf;
    c[3] = c[3] * 0.7225 + (sff * 0.0225) * dbf;
    const double dd = delta * fabs(delta), a0 = c[0] * fabs(c[0]), a1 = c[1] * fabs(c[1]);
    int r = 0;
    if (dd > sff * dbf || a0 > c[2] * VAR1_UPDATE || a1 > c[3] * VAR2_UPDATE)
        r = 1;
    else if (-dd > VAR_BACKTRACK * sff * dbf || -a0 > VAR_BACKTRACK * c[2] || -a1 > VAR_BACKTRACK * c[3])
        r = -1;
    if (r)
        c[0] = c[1] = c[2] = c[3] = 0.0;
    return r;
}

/* The errors of a completed block: the echo estimates from R [2m][2B] (float32, times 2B) or,
 * where R is NULL, from the pool's Y and YF; the caller's block from d [m][B] or, where NULL,
 * the pool's D. The two-path logic (copies W to F or F to W in the pool); the foreground
 * estimate to yf [m][B] (unless NULL); e and y behind B zeros into E0 [2m][2B] (only the second
 * halves are written); See (floored) and Syy into sums [m][2]. */
void mdf_errors(const mdf_pool *p, int64_t m, const int64_t *slots, const float *R, const double *d,
                double *yf, double *E0, double *sums)
{
    const int64_t K = p->K, B = p->B, n = 2 * B, kf = K * (B + 1);
    double tmp[B];
    for (int64_t j = 0; j < m; j++) {
        const int64_t s = slots[j];
        double *e = E0 + j * n + B, *y = E0 + (m + j) * n + B;
        double *g = yf ? yf + j * B : tmp;
        const double *dj = d ? d + j * B : p->D + s * B;
        if (R) {
            const float *rb = R + j * n + B, *rf = R + (m + j) * n + B;
            for (int64_t i = 0; i < B; i++) {
                y[i] = (double)rb[i] * (double)n;
                g[i] = (double)rf[i] * (double)n;
            }
        } else {
            memcpy(y, p->Y + s * B, B * sizeof(double));
            memcpy(g, p->YF + s * B, B * sizeof(double));
        }
        double see = 0, syy = 0, sgg = 0, sff = 0, sdd = 0;
        for (int64_t i = 0; i < B; i++) {
            const double ei = dj[i] - y[i], fi = dj[i] - g[i], di = g[i] - y[i];
            e[i] = ei;
            see += ei * ei;
            syy += y[i] * y[i];
            sgg += g[i] * g[i];
            sff += fi * fi;
            sdd += di * di;
        }
        double *v = p->V + s * NV;
        const int r = two_path(v, see, sff, sdd);
        if (r > 0) {
            memcpy(p->F + 2 * s * kf, p->W + 2 * s * kf, 2 * kf * sizeof(float));
        } else if (r < 0) {  /* the background filter went worse: restarted from the foreground */
            memcpy(p->W + 2 * s * kf, p->F + 2 * s * kf, 2 * kf * sizeof(float));
            for (int64_t i = 0; i < B; i++) {
                y[i] = g[i];
                e[i] = dj[i] - g[i];
            }
            see = sff;
            syy = sgg;
        }
        sums[2 * j] = nmax(see, n * 100.0 / 64);
        sums[2 * j + 1] = syy;
    }
}

/* Proportionate step per partition (mdf_adjust_prop, as mdf.proportions) of one slot's W. */
static void proportions(const float *W, int64_t K, int64_t f, double *prop)
{
    double mx = 0.0, sum = 0.0;
    for (int64_t k = 0; k < K; k++) {
        /* (numpy sums the float32 squares in float32: the same within its rounding) */
        prop[k] = sqrt(sumsqf(W + 2 * k * f, 2 * f) + 1e-6 * (double)f);
        mx = nmax(mx, prop[k]);
    }
    for (int64_t k = 0; k < K; k++)
        sum += (prop[k] += 0.1 * mx);
    for (int64_t k = 0; k < K; k++)
        prop[k] = 0.99 * prop[k] / sum;
}

/* Each bin's rate mu [f] from the block's power spectra (mdf_step._rates: leak, RER, the
 * adaptation state into v; the smoothed spectra S [3][f] in place). E, Yc: the error's and the
 * echo estimate's spectra (complex128 [f]); x0 the newest reference spectrum (complex64). */
static void rates(const mdf_pool *p, double *v, double *S, const double *E, const double *Yc,
                  const float *x0, double see, double syy, double *mu, double *rf)
{
    const int64_t K = p->K, B = p->B, f = B + 1, n = 2 * B;
    const double ss = 0.35 / (double)K, lam = (double)B / (double)p->rate, sxx = v[SXX];
    const double a_y = 2.0 * (double)B / (double)p->rate, a_e = 0.5 * (double)B / (double)p->rate;
    double syy2 = 0.0, sey2 = 0.0;
    for (int64_t i = 0; i < f; i++) {
        const double r = E[2 * i] * E[2 * i] + E[2 * i + 1] * E[2 * i + 1];
        const double yp = Yc[2 * i] * Yc[2 * i] + Yc[2 * i + 1] * Yc[2 * i + 1];
        double power = (double)(x0[2 * i] * x0[2 * i]) + (double)(x0[2 * i + 1] * x0[2 * i + 1]);
        power = (S[i] * (1 - ss) + 1.0) + power * ss;
        const double de = r - S[f + i], dy = yp - S[2 * f + i];
        syy2 += dy * dy;
        sey2 += de * dy;
        S[i] = power;
        S[f + i] += de * lam;
        S[2 * f + i] += dy * lam;
        rf[i] = r;
        mu[i] = yp;  /* (Yf, for now) */
    }
    const double pyy_new = sqrt(syy2), pey_new = sey2 / nmax(pyy_new, 1e-12);
    const double alpha = nmin(a_y * syy, a_e * see) / see;
    const double pyy = nmax(v[PYY] * (1 - alpha) + alpha * pyy_new, 1.0);
    const double pey = nmin(nmax(v[PEY] * (1 - alpha) + alpha * pey_new, MIN_LEAK * pyy), pyy);
    const double leak = pey / pyy;
    const double rer = nmin(nmax((1e-4 * sxx + 3.0 * leak * syy) / see, 0.0), 0.5);
    const int adapted = v[ADAPTED] > 0 || (v[SUM_ADAPT] > (double)K && leak > 0.03);
    const double rate0 = sxx > n * 1000.0 / 64 ? nmin(0.25 * sxx, 0.25 * see) / see : 0.0;
    for (int64_t i = 0; i < f; i++) {  /* (r / r1 / (S + 10) as one division: within rounding) */
        const double r1 = rf[i] + 1.0;
        const double r = nmin(leak * mu[i], 0.5 * r1) * 0.7 + (0.3 * rer) * r1;
        mu[i] = adapted ? r / (r1 * (S[i] + 10.0)) : rate0 / (S[i] + 10.0);
    }
    v[PEY] = pey;
    v[PYY] = pyy;
    v[LEAK] = adapted ? leak : 1.0;
    if (!adapted)
        v[SUM_ADAPT] += rate0;
    v[ADAPTED] = adapted;
}

/* w += (p conj(x)) G over f complex64 bins, in float32 (numpy rounds p conj(x) and its product
 * with G to complex64 too, computing each in complex128: within float32 rounding). */
static void step_partition(float *restrict w, const float *restrict x, const float *restrict G, float p,
                           int64_t f)
{
    for (int64_t i = 0; i < 2 * f; i += 2) {
        const float ur = x[i] * p, ui = -x[i + 1] * p;
        w[i] += ur * G[i] - ui * G[i + 1];
        w[i + 1] += ur * G[i + 1] + ui * G[i];
    }
}

/* The filter update of a completed block from the spectra Z [2m][f] (complex128: the error's,
 * then the echo estimate's, Speex-scaled) and sums [m][2] (See, Syy from mdf_errors): rates,
 * proportions, W += prop conj(X) mu E in the pool; the rows to constrain into C [j][f]
 * (complex64; j = 2m, or m when K = 1): W_0 of each row, then W_{1 + count % (K - 1)}. */
void mdf_update(const mdf_pool *p, int64_t m, const int64_t *slots, const double *Z, const double *sums,
                float *C)
{
    const int64_t K = p->K, f = p->B + 1, kf = K * f;
    double mu[f], rf[f], prop[K];
    float G[2 * f];
    for (int64_t j = 0; j < m; j++) {
        const int64_t s = slots[j], h = p->H[s];
        double *v = p->V + s * NV;
        float *W = p->W + 2 * s * kf;
        const float *X = p->X + 2 * s * kf;
        const double *E = Z + 2 * j * f;
        rates(p, v, p->S + s * 3 * f, E, Z + 2 * (m + j) * f, X + 2 * h * f, sums[2 * j], sums[2 * j + 1], mu, rf);
        if (v[ADAPTED] > 0)
            proportions(W, K, f, prop);
        else
            memcpy(prop, p->P + s * K, K * sizeof(double));
        for (int64_t i = 0; i < f; i++) {  /* G = mu E */
            G[2 * i] = (float)(mu[i] * E[2 * i]);
            G[2 * i + 1] = (float)(mu[i] * E[2 * i + 1]);
        }
        for (int64_t k = 0; k < K; k++)  /* each partition's step, as mdf.c: prop conj(X) mu E */
            step_partition(W + 2 * k * f, X + 2 * ring(h, k, K) * f, G, (float)prop[k], f);
        memcpy(p->P + s * K, prop, K * sizeof(double));
        memcpy(C + 2 * j * f, W, 2 * f * sizeof(float));
        if (K > 1) {
            const int64_t part = 1 + (int64_t)v[COUNT] % (K - 1);
            memcpy(C + 2 * (m + j) * f, W + 2 * part * f, 2 * f * sizeof(float));
        }
    }
}

/* The constrained rows C (complex128, as mdf_update laid them out) back into W; count + 1;
 * bad[j] = 1 where the slot's W is not all finite (the caller resets those slots). Returns the
 * number of bad slots. */
int64_t mdf_finish(const mdf_pool *p, int64_t m, const int64_t *slots, const double *C, uint8_t *bad)
{
    const int64_t K = p->K, f = p->B + 1, kf = K * f;
    int64_t nbad = 0;
    for (int64_t j = 0; j < m; j++) {
        const int64_t s = slots[j];
        double *v = p->V + s * NV;
        float *W = p->W + 2 * s * kf;
        const double *c = C + 2 * j * f;
        for (int64_t i = 0; i < 2 * f; i++)
            W[i] = (float)c[i];
        if (K > 1) {
            float *w = W + 2 * (1 + (int64_t)v[COUNT] % (K - 1)) * f;
            c = C + 2 * (m + j) * f;
            for (int64_t i = 0; i < 2 * f; i++)
                w[i] = (float)c[i];
        }
        bad[j] = !all_finite(W, 2 * kf);
        nbad += bad[j];
        v[COUNT] += 1.0;
    }
    return nbad;
}

/* A plan for real transforms of N = 2n points (NULL when out of memory); mdf_fft_free frees it. */
void *mdf_fft_new(int64_t n) { return fft_new(n); }
void mdf_fft_free(void *pl) { fft_free(pl); }

/* Forward real transforms of m rows of x [m][N] (float64, or float32 where single) into
 * X [m][n + 1] (complex128), times scale. */
void mdf_rfft(const void *plan, int64_t m, const void *x, int single, double *X, double scale)
{
    const fft_plan *pl = plan;
    const int64_t n = pl->n;
    const size_t es = single ? sizeof(float) : sizeof(double);
    v4 zr[n], zi[n], Xr[n + 1], Xi[n + 1];
    for (int64_t g = 0; g < m; g += LANES) {
        const int lanes = m - g < LANES ? (int)(m - g) : LANES;
        const void *in[LANES];
        void *out[LANES];
        for (int l = 0; l < LANES; l++) {
            const int64_t row = g + (l < lanes ? l : 0);
            in[l] = (const char *)x + row * 2 * n * es;
            out[l] = X + row * 2 * (n + 1);
        }
        load_pairs(zr, zi, in, single, n);
        rfft_lanes(pl, zr, zi, Xr, Xi, (float)scale);
        store_pairs(Xr, Xi, out, lanes, 0, n + 1);
    }
}

/* Inverse real transforms (numpy's irfft) of m rows X [m][n + 1] (complex64) into x [m][N]
 * (float32). */
void mdf_irfft(const void *plan, int64_t m, const float *X, float *x)
{
    const fft_plan *pl = plan;
    const int64_t n = pl->n;
    v4 zr[n], zi[n], tr[n], ti[n], Xr[n + 1], Xi[n + 1];
    for (int64_t g = 0; g < m; g += LANES) {
        const int lanes = m - g < LANES ? (int)(m - g) : LANES;
        const void *in[LANES];
        void *out[LANES];
        for (int l = 0; l < LANES; l++) {
            const int64_t row = g + (l < lanes ? l : 0);
            in[l] = X + row * 2 * (n + 1);
            out[l] = x + row * 2 * n;
        }
        load_pairs(Xr, Xi, in, 1, n + 1);
        irfft_lanes(pl, Xr, Xi, zr, zi, tr, ti);
        store_pairs(zr, zi, out, lanes, 1, n);
    }
}

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT, .m_name = "_mdf",
    .m_doc = "The MDF kernels' element-wise phases (plain C functions, loaded with ctypes).", .m_size = -1};

PyMODINIT_FUNC PyInit__mdf(void) { return PyModule_Create(&module); }
