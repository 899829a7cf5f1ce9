/* Real FFTs of N = 2n points for the MDF kernel (gateway/audio/_mdf.c), four rows at a time.
 *
 * Each of the four lanes of a GCC vector (float32) is one row, so a transform of four rows costs
 * about what one scalar transform would: a complex FFT of n points (mixed-radix Stockham,
 * self-sorting, radices 4, 2, 3, 5 and a generic one) of z[t] = x[2t] + i x[2t+1], then the
 * usual split into the real transform's bins 0..n. Conventions as numpy's: forward
 * X[k] = sum_t x[t] e^(-2 pi i k t / N) (times a scale), inverse = numpy's irfft (1 / N; the
 * imaginary parts of bins 0 and n ignored). Float32 throughout (twiddles computed in double).
 */
#ifndef MDF_FFT_H
#define MDF_FFT_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v4 __attribute__((vector_size(16)));
#define LANES 4
#define MAXSTAGES 24

typedef struct {
    int64_t n;                      /* complex size (N / 2) */
    int nst, radix[MAXSTAGES];
    float *tw[MAXSTAGES];           /* stage twiddles w_{L p}^{r k1}: [L][p - 1] re, im pairs */
    float *rt;                      /* e^(-2 pi i k / N), k = 0..n: re, im pairs */
} fft_plan;

static void fft_free(fft_plan *pl)
{
    if (!pl)
        return;
    for (int s = 0; s < pl->nst; s++)
        free(pl->tw[s]);
    free(pl->rt);
    free(pl);
}

static fft_plan *fft_new(int64_t n)
{
    fft_plan *pl = calloc(1, sizeof *pl);
    if (!pl)
        return NULL;
    pl->n = n;
    int64_t rest = n;
    while (rest > 1 && pl->nst < MAXSTAGES) {
        int p = rest % 4 == 0 ? 4 : rest % 2 == 0 ? 2 : rest % 3 == 0 ? 3 : rest % 5 == 0 ? 5 : 0;
        if (!p)
            for (p = 7; rest % p; p += 2) {}
        pl->radix[pl->nst++] = p;
        rest /= p;
    }
    int64_t L = 1;
    for (int s = 0; s < pl->nst; s++) {
        const int p = pl->radix[s];
        float *t = pl->tw[s] = malloc(sizeof(float) * 2 * L * (p - 1) + 1);
        if (!t) {
            fft_free(pl);
            return NULL;
        }
        for (int64_t k1 = 0; k1 < L; k1++)
            for (int r = 1; r < p; r++) {
                const double a = -2.0 * M_PI * (double)(r * k1) / (double)(L * p);
                t[2 * (k1 * (p - 1) + r - 1)] = (float)cos(a);
                t[2 * (k1 * (p - 1) + r - 1) + 1] = (float)sin(a);
            }
        L *= p;
    }
    pl->rt = malloc(sizeof(float) * 2 * (n + 1));
    if (!pl->rt) {
        fft_free(pl);
        return NULL;
    }
    for (int64_t k = 0; k <= n; k++) {
        const double a = -M_PI * (double)k / (double)n;
        pl->rt[2 * k] = (float)cos(a);
        pl->rt[2 * k + 1] = (float)sin(a);
    }
    return pl;
}

static inline v4 splat(float a) { return (v4){a, a, a, a}; }

typedef double v4d __attribute__((vector_size(32)));
typedef int v4i __attribute__((vector_size(16)));

/* Transposes the 4 x 4 matrix of rows a, b, c, d in place. */
static inline void tr4(v4 *a, v4 *b, v4 *c, v4 *d)
{
    const v4 t0 = __builtin_shuffle(*a, *b, (v4i){0, 4, 1, 5}), t1 = __builtin_shuffle(*c, *d, (v4i){0, 4, 1, 5});
    const v4 t2 = __builtin_shuffle(*a, *b, (v4i){2, 6, 3, 7}), t3 = __builtin_shuffle(*c, *d, (v4i){2, 6, 3, 7});
    *a = __builtin_shuffle(t0, t1, (v4i){0, 1, 4, 5});
    *b = __builtin_shuffle(t0, t1, (v4i){2, 3, 6, 7});
    *c = __builtin_shuffle(t2, t3, (v4i){0, 1, 4, 5});
    *d = __builtin_shuffle(t2, t3, (v4i){2, 3, 6, 7});
}

static inline v4 load4(const void *p, int single)
{
    if (single) {
        v4 v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    v4d w;
    memcpy(&w, p, sizeof w);
    return __builtin_convertvector(w, v4);
}

/* Lanes from rows: zr[t][l], zi[t][l] = rows[l][2t], rows[l][2t + 1] for t < np (float32 rows
 * where single, else float64). */
static void load_pairs(v4 *zr, v4 *zi, const void *const rows[LANES], int single, int64_t np)
{
    const size_t es = single ? sizeof(float) : sizeof(double);
    int64_t t = 0;
    for (; t + 4 <= np; t += 4) {
        v4 re[4], im[4];
        for (int l = 0; l < 4; l++) {
            const char *r = (const char *)rows[l] + 2 * t * es;
            const v4 a = load4(r, single), b = load4(r + 4 * es, single);
            re[l] = __builtin_shuffle(a, b, (v4i){0, 2, 4, 6});
            im[l] = __builtin_shuffle(a, b, (v4i){1, 3, 5, 7});
        }
        tr4(&re[0], &re[1], &re[2], &re[3]);
        tr4(&im[0], &im[1], &im[2], &im[3]);
        for (int u = 0; u < 4; u++) {
            zr[t + u] = re[u];
            zi[t + u] = im[u];
        }
    }
    for (; t < np; t++)
        for (int l = 0; l < 4; l++) {
            float a, b;
            if (single) {
                a = ((const float *)rows[l])[2 * t];
                b = ((const float *)rows[l])[2 * t + 1];
            } else {
                a = (float)((const double *)rows[l])[2 * t];
                b = (float)((const double *)rows[l])[2 * t + 1];
            }
            zr[t][l] = a;
            zi[t][l] = b;
        }
}

/* Rows from lanes (the inverse of load_pairs) for the first `lanes` lanes. */
static void store_pairs(const v4 *zr, const v4 *zi, void *const rows[LANES], int lanes, int single, int64_t np)
{
    int64_t t = 0;
    for (; t + 4 <= np; t += 4) {
        v4 re[4] = {zr[t], zr[t + 1], zr[t + 2], zr[t + 3]}, im[4] = {zi[t], zi[t + 1], zi[t + 2], zi[t + 3]};
        tr4(&re[0], &re[1], &re[2], &re[3]);
        tr4(&im[0], &im[1], &im[2], &im[3]);
        for (int l = 0; l < lanes; l++) {
            const v4 lo = __builtin_shuffle(re[l], im[l], (v4i){0, 4, 1, 5});
            const v4 hi = __builtin_shuffle(re[l], im[l], (v4i){2, 6, 3, 7});
            if (single) {
                float *r = (float *)rows[l] + 2 * t;
                memcpy(r, &lo, sizeof lo);
                memcpy(r + 4, &hi, sizeof hi);
            } else {
                double *r = (double *)rows[l] + 2 * t;
                const v4d a = __builtin_convertvector(lo, v4d), b = __builtin_convertvector(hi, v4d);
                memcpy(r, &a, sizeof a);
                memcpy(r + 4, &b, sizeof b);
            }
        }
    }
    for (; t < np; t++)
        for (int l = 0; l < lanes; l++) {
            if (single) {
                ((float *)rows[l])[2 * t] = zr[t][l];
                ((float *)rows[l])[2 * t + 1] = zi[t][l];
            } else {
                ((double *)rows[l])[2 * t] = zr[t][l];
                ((double *)rows[l])[2 * t + 1] = zi[t][l];
            }
        }
}

/* The radix-p butterflies of a stage (forward: w_p = e^(-2 pi i / p)) on the twiddled inputs
 * (ar, ai)[p], into y[out + q k2]. */
static inline __attribute__((always_inline)) void
bfly4(const v4 *ar, const v4 *ai, v4 *restrict yr, v4 *restrict yi, int64_t out, int64_t q)
{
    const v4 s0r = ar[0] + ar[2], s0i = ai[0] + ai[2], d0r = ar[0] - ar[2], d0i = ai[0] - ai[2];
    const v4 s1r = ar[1] + ar[3], s1i = ai[1] + ai[3], d1r = ar[1] - ar[3], d1i = ai[1] - ai[3];
    yr[out] = s0r + s1r;
    yi[out] = s0i + s1i;
    yr[out + q] = d0r + d1i;
    yi[out + q] = d0i - d1r;
    yr[out + 2 * q] = s0r - s1r;
    yi[out + 2 * q] = s0i - s1i;
    yr[out + 3 * q] = d0r - d1i;
    yi[out + 3 * q] = d0i + d1r;
}

static inline __attribute__((always_inline)) void
bfly2(const v4 *ar, const v4 *ai, v4 *restrict yr, v4 *restrict yi, int64_t out, int64_t q)
{
    yr[out] = ar[0] + ar[1];
    yi[out] = ai[0] + ai[1];
    yr[out + q] = ar[0] - ar[1];
    yi[out + q] = ai[0] - ai[1];
}

static inline __attribute__((always_inline)) void
bfly3(const v4 *ar, const v4 *ai, v4 *restrict yr, v4 *restrict yi, int64_t out, int64_t q)
{
    const v4 cc = splat(-0.5f), sn = splat(0.86602540378443865f);
    const v4 tr = ar[1] + ar[2], ti = ai[1] + ai[2], ur = sn * (ar[1] - ar[2]), ui = sn * (ai[1] - ai[2]);
    const v4 mr = ar[0] + cc * tr, mi = ai[0] + cc * ti;
    yr[out] = ar[0] + tr;
    yi[out] = ai[0] + ti;
    yr[out + q] = mr + ui;
    yi[out + q] = mi - ur;
    yr[out + 2 * q] = mr - ui;
    yi[out + 2 * q] = mi + ur;
}

static inline __attribute__((always_inline)) void
bfly5(const v4 *ar, const v4 *ai, v4 *restrict yr, v4 *restrict yi, int64_t out, int64_t q)
{
    const v4 c1 = splat(0.30901699437494742f), c2 = splat(-0.80901699437494742f);
    const v4 s1 = splat(0.95105651629515357f), s2 = splat(0.58778525229247313f);
    const v4 t1r = ar[1] + ar[4], t1i = ai[1] + ai[4], t2r = ar[2] + ar[3], t2i = ai[2] + ai[3];
    const v4 t3r = ar[1] - ar[4], t3i = ai[1] - ai[4], t4r = ar[2] - ar[3], t4i = ai[2] - ai[3];
    const v4 m1r = ar[0] + c1 * t1r + c2 * t2r, m1i = ai[0] + c1 * t1i + c2 * t2i;
    const v4 m2r = ar[0] + c2 * t1r + c1 * t2r, m2i = ai[0] + c2 * t1i + c1 * t2i;
    const v4 n1r = s1 * t3r + s2 * t4r, n1i = s1 * t3i + s2 * t4i;
    const v4 n2r = s2 * t3r - s1 * t4r, n2i = s2 * t3i - s1 * t4i;
    yr[out] = ar[0] + t1r + t2r;
    yi[out] = ai[0] + t1i + t2i;
    yr[out + q] = m1r + n1i;       /* m1 - i n1 */
    yi[out + q] = m1i - n1r;
    yr[out + 4 * q] = m1r - n1i;   /* m1 + i n1 */
    yi[out + 4 * q] = m1i + n1r;
    yr[out + 2 * q] = m2r + n2i;
    yi[out + 2 * q] = m2i - n2r;
    yr[out + 3 * q] = m2r - n2i;
    yi[out + 3 * q] = m2i + n2r;
}

/* The generic butterfly (a prime radix above 5): b_k2 = sum_r a_r e^(-2 pi i r k2 / p), the
 * inputs twiddled here. */
static void bfly_generic(const v4 *restrict xr, const v4 *restrict xi, v4 *restrict yr, v4 *restrict yi,
                         int64_t in, int64_t out, int64_t sp, int64_t q, const float *w, int p)
{
    for (int k2 = 0; k2 < p; k2++) {
        v4 br = splat(0.0f), bi = splat(0.0f);
        for (int r = 0; r < p; r++) {
            v4 a = xr[in + sp * r], b = xi[in + sp * r];
            if (r) {
                const v4 wc = splat(w[2 * (r - 1)]), wd = splat(w[2 * (r - 1) + 1]);
                const v4 t = a * wc - b * wd;
                b = a * wd + b * wc;
                a = t;
            }
            const double ang = -2.0 * M_PI * (double)((r * k2) % p) / (double)p;
            const v4 ec = splat((float)cos(ang)), ed = splat((float)sin(ang));
            br += a * ec - b * ed;
            bi += a * ed + b * ec;
        }
        yr[out + q * k2] = br;
        yi[out + q * k2] = bi;
    }
}

/* One Stockham stage of radix p: s = s' p residues of length-L transforms in (xr, xi) into
 * s' residues of length L p in (yr, yi):
 *   Y'[j + s' k1 + (n / p) k2] = sum_r w_{L p}^(r k1) w_p^(r k2) Y[j + s' r + s k1]
 * (j < s', k1 < L, k2 < p). Inlined per radix, so p is a constant in each copy. */
static inline __attribute__((always_inline)) void
fft_stage_p(const fft_plan *pl, int st, int64_t L, const v4 *restrict xr, const v4 *restrict xi,
            v4 *restrict yr, v4 *restrict yi, const int p)
{
    const int64_t n = pl->n, s = n / L, sp = s / p, q = n / p;
    const float *tw = pl->tw[st];
    for (int64_t k1 = 0; k1 < L; k1++) {
        const float *w = tw + 2 * k1 * (p - 1);
        v4 c[5], d[5];
        for (int r = 1; r < p && r < 5; r++) {
            c[r] = splat(w[2 * (r - 1)]);
            d[r] = splat(w[2 * (r - 1) + 1]);
        }
        for (int64_t j = 0; j < sp; j++) {
            v4 ar[5], ai[5];
            const int64_t in = j + s * k1, out = j + sp * k1;
            ar[0] = xr[in];
            ai[0] = xi[in];
            for (int r = 1; r < p && r < 5; r++) {
                const v4 a = xr[in + sp * r], b = xi[in + sp * r];
                ar[r] = a * c[r] - b * d[r];
                ai[r] = a * d[r] + b * c[r];
            }
            if (p == 4)
                bfly4(ar, ai, yr, yi, out, q);
            else if (p == 2)
                bfly2(ar, ai, yr, yi, out, q);
            else if (p == 3)
                bfly3(ar, ai, yr, yi, out, q);
            else if (p == 5)
                bfly5(ar, ai, yr, yi, out, q);
            else
                bfly_generic(xr, xi, yr, yi, in, out, sp, q, w, p);
        }
    }
}

static void fft_stage(const fft_plan *pl, int st, int64_t L, const v4 *restrict xr, const v4 *restrict xi,
                      v4 *restrict yr, v4 *restrict yi)
{
    switch (pl->radix[st]) {
    case 4: fft_stage_p(pl, st, L, xr, xi, yr, yi, 4); break;
    case 2: fft_stage_p(pl, st, L, xr, xi, yr, yi, 2); break;
    case 3: fft_stage_p(pl, st, L, xr, xi, yr, yi, 3); break;
    case 5: fft_stage_p(pl, st, L, xr, xi, yr, yi, 5); break;
    default: fft_stage_p(pl, st, L, xr, xi, yr, yi, pl->radix[st]);
    }
}

/* The complex DFT of n points of (zr, zi) in place (t, u: scratch of n each). */
static void fft_complex(const fft_plan *pl, v4 *zr, v4 *zi, v4 *tr, v4 *ti)
{
    v4 *ar = zr, *ai = zi, *br = tr, *bi = ti;
    int64_t L = 1;
    for (int st = 0; st < pl->nst; st++) {
        fft_stage(pl, st, L, ar, ai, br, bi);
        L *= pl->radix[st];
        v4 *t = ar; ar = br; br = t;
        t = ai; ai = bi; bi = t;
    }
    if (ar != zr)
        for (int64_t i = 0; i < pl->n; i++) {
            zr[i] = ar[i];
            zi[i] = ai[i];
        }
}

/* Forward real transform of lanes: x[2t] + i x[2t+1] packed in (zr, zi) [n]; the bins 0..n,
 * times scale, into (Xr, Xi) [n + 1]. */
static void rfft_lanes(const fft_plan *pl, v4 *zr, v4 *zi, v4 *Xr, v4 *Xi, float scale)
{
    const int64_t n = pl->n;
    fft_complex(pl, zr, zi, Xr, Xi);
    const v4 h = splat(0.5f * scale);
    {  /* k = 0: X[0] = E[0] + O[0], X[n] = E[0] - O[0] (both real) */
        const v4 er = zr[0] + zr[0], orr = zi[0] + zi[0];
        Xr[0] = h * (er + orr);
        Xr[n] = h * (er - orr);
        Xi[0] = Xi[n] = splat(0.0f);
    }
    for (int64_t k = 1; 2 * k <= n; k++) {
        const int64_t c = n - k;
        const v4 ar = zr[k], ai = zi[k], br = zr[c], bi = -zi[c];  /* Z[k], conj Z[n - k] */
        const v4 er = ar + br, ei = ai + bi;                       /* 2 E */
        const v4 orr = ai - bi, oi = br - ar;                      /* 2 O = (Z - conj Z') / i */
        v4 wr = splat(pl->rt[2 * k]), wi = splat(pl->rt[2 * k + 1]);
        Xr[k] = h * (er + wr * orr - wi * oi);                     /* X[k] = E + w_k O */
        Xi[k] = h * (ei + wr * oi + wi * orr);
        if (c == k)
            break;
        wr = splat(pl->rt[2 * c]);
        wi = splat(pl->rt[2 * c + 1]);
        Xr[c] = h * (er + wr * orr + wi * oi);                     /* X[n - k] = conj E + w_(n-k) conj O */
        Xi[c] = h * (-ei - wr * oi + wi * orr);
    }
}

/* Inverse real transform (numpy's irfft, 1 / N): bins (Xr, Xi) [n + 1] into the packed lanes
 * (zr, zi) [n]: x[2t] = zr[t], x[2t+1] = zi[t]. */
static void irfft_lanes(const fft_plan *pl, const v4 *Xr, const v4 *Xi, v4 *zr, v4 *zi, v4 *tr, v4 *ti)
{
    const int64_t n = pl->n;
    const v4 h = splat(0.5f / (float)n);
    for (int64_t k = 0; k < n; k++) {
        const v4 ar = Xr[k], ai = k ? Xi[k] : splat(0.0f);
        const v4 br = Xr[n - k], bi = (k ? -Xi[n - k] : splat(0.0f));  /* conj X[n - k] */
        const v4 er = ar + br, ei = ai + bi, dr = ar - br, di = ai - bi;
        const v4 wr = splat(pl->rt[2 * k]), wi = splat(-pl->rt[2 * k + 1]);  /* e^(+2 pi i k / N) */
        const v4 orr = dr * wr - di * wi, oi = dr * wi + di * wr;
        /* Z = E + i O, conjugated for the inverse by a forward transform */
        zr[k] = h * (er - oi);
        zi[k] = -h * (ei + orr);
    }
    fft_complex(pl, zr, zi, tr, ti);
    for (int64_t k = 0; k < n; k++)
        zi[k] = -zi[k];
}

#endif
