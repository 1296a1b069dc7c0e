/* From one CoNR shader level to the next in two passes (models/conr/level_step.py).
 *
 * The torch path (cinn.CINN.forward) splits a block's output into pieces, doubles each
 * (bilinear, half-pixel), warps the messages by their doubled flows, warps the sheet by
 * the accumulated flow, weighs the views by mask * softmax(mask) and mixes them, then
 * concatenates, converts and transposes the next block's inputs: some thirty passes over
 * maps larger than the cache. Here:
 *
 *   level_low:  per block-output pixel, the accumulated flow (block flow + the flow so
 *               far) and sigmoid of the mask logits, fp32;
 *   level_next: per pixel of the doubled map, every input of the next block, written
 *               channels-last in the convolutions' type: per view [flow | sheet RGBA and
 *               features | local message], per frame [mixed flow | mixed RGBA | mixed
 *               message] (after the target features, which the caller copies in), and
 *               the accumulated flow in fp32 for the level after.
 *
 * Doubling is torch's (half-pixel centres, borders repeated): sample 2i of a row is
 * lerp(x[i], x[i-1], 1/4), sample 2i+1 lerp(x[i], x[i+1], 1/4), along x then along y.
 * Warping is grid_sample's (bilinear, border clamp, corners aligned) at x + flow.
 */
#ifndef LEVEL_STEP_LOOPS
#include <stdint.h>

static inline float as_float(uint32_t u) {
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t to_bf16(float f) { /* round to nearest even, as torch converts */
    uint32_t u;
    __builtin_memcpy(&u, &f, 4);
    u += 0x7FFF + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* the same exp as last_level.c: vectorisable, a few ulp from expf */
static inline float exp_f(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float n = (float)((int32_t)(x * 1.44269504088896341f + 128.5f) - 128);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * as_float((uint32_t)((int32_t)n + 127) << 23);
}

#define MAX_CHANNELS 4096
#define MAX_GROUPS 256


/* The four pixels whose lerps give the doubled map at (X, Y), as offsets in pixels of a
 * (h, w) image: 00 its own, 01 the x neighbour, 10 the y neighbour, 11 both. */
typedef struct {
    int32_t o00, o01, o10, o11;
} taps;

static inline taps taps_at(int X, int Y, int h, int w) {
    int i = Y >> 1, j = X >> 1;
    int i2 = (Y & 1) ? (i + 1 < h ? i + 1 : h - 1) : (i > 0 ? i - 1 : 0);
    int j2 = (X & 1) ? (j + 1 < w ? j + 1 : w - 1) : (j > 0 ? j - 1 : 0);
    taps t = {i * w + j, i * w + j2, i2 * w + j, i2 * w + j2};
    return t;
}

/* bilinear sampling at (x, y) of an (h, w) map, border clamp: corner pixels and weights */
typedef struct {
    int x0, y0, x1, y1;
    float w00, w01, w10, w11;
} corners;

static inline corners corners_at(float x, float y, int h, int w) {
    x = x < 0.0f ? 0.0f : x;
    x = x > w - 1 ? (float)(w - 1) : x;
    y = y < 0.0f ? 0.0f : y;
    y = y > h - 1 ? (float)(h - 1) : y;
    corners k;
    k.x0 = (int)x; /* x >= 0: truncation is floor */
    k.y0 = (int)y;
    k.x1 = k.x0 + 1 < w ? k.x0 + 1 : w - 1;
    k.y1 = k.y0 + 1 < h ? k.y0 + 1 : h - 1;
    float ax = x - k.x0, ay = y - k.y0;
    k.w00 = (1 - ax) * (1 - ay);
    k.w01 = ax * (1 - ay);
    k.w10 = (1 - ax) * ay;
    k.w11 = ax * ay;
    return k;
}

/* Sampling at position x (border clamp) a map doubled from n pixels, as weights on the
 * undoubled map: doubled pixel i is 3/4 of pixel i / 2 and 1/4 of its neighbour (before
 * it for even i, after it for odd i, borders repeated), and the sample is between doubled
 * pixels i0 and i0 + 1. The pixels involved lie within three in a row: returns the first,
 * ``w0``..``w2`` get their weights (past the border, the weight belongs to pixel n - 1,
 * which the caller reads instead). Branch-free, so that a loop over groups vectorises. */
static inline int32_t spread(float x, int n, float *w0, float *w1, float *w2) {
    float top = (float)(2 * n - 1);
    x = x < 0.0f ? 0.0f : x;
    x = x > top ? top : x;
    int32_t i0 = (int32_t)x;
    int32_t i1 = i0 + 1 < 2 * n ? i0 + 1 : 2 * n - 1;
    float t = x - (float)i0;
    int32_t j0 = i0 >> 1, j1 = i1 >> 1;
    int32_t n0 = (i0 & 1) ? j0 + 1 : j0 - 1, n1 = (i1 & 1) ? j1 + 1 : j1 - 1;
    n0 = n0 < 0 ? 0 : (n0 > n - 1 ? n - 1 : n0);
    n1 = n1 < 0 ? 0 : (n1 > n - 1 ? n - 1 : n1);
    int32_t base = j0 < n0 ? j0 : n0;
    base = j1 < base ? j1 : base;
    base = n1 < base ? n1 : base;
    float a = 0.75f * (1.0f - t), b = 0.25f * (1.0f - t), c = 0.75f * t, d = 0.25f * t;
    *w0 = (j0 == base) * a + (n0 == base) * b + (j1 == base) * c + (n1 == base) * d;
    *w1 = (j0 == base + 1) * a + (n0 == base + 1) * b + (j1 == base + 1) * c
        + (n1 == base + 1) * d;
    *w2 = (j0 == base + 2) * a + (n0 == base + 2) * b + (j1 == base + 2) * c
        + (n1 == base + 2) * d;
    return base;
}

#define LERP(a, b) ((a) + 0.25f * ((b) - (a)))

/* The loops, once per type of the block output: this file includes itself twice */
#define T float
#define NAME(part) level_f32_##part
#define LOAD(p, i) ((p)[i])
#define STORE(x) (x)
#define LEVEL_STEP_LOOPS
#include __FILE__
#undef T
#undef NAME
#undef LOAD
#undef STORE
#define T uint16_t
#define NAME(part) level_bf16_##part
#define LOAD(p, i) as_float((uint32_t)(p)[i] << 16)
#define STORE(x) to_bf16(x)
#include __FILE__
#undef LEVEL_STEP_LOOPS

#else /* LEVEL_STEP_LOOPS: the loops for one type T */

int NAME(low)(const T *out, const float *flow_so_far, int images, int h, int w, int c,
               int mask0, int m, float *low, int row0, int row1) {
    int lc = 3 + m;
    for (int row = row0; row < row1 && row < images * h; row++) {
        for (int x = 0; x < w; x++) {
            long p = (long)row * w + x;
            const T *o = out + p * c;
            float *l = low + p * lc;
            l[0] = LOAD(o, 0) + (flow_so_far ? flow_so_far[2 * p] : 0.0f);
            l[1] = LOAD(o, 1) + (flow_so_far ? flow_so_far[2 * p + 1] : 0.0f);
            l[2] = 1.0f / (1.0f + exp_f(-LOAD(o, mask0)));
            for (int k = 0; k < m; k++)
                l[3 + k] = 1.0f / (1.0f + exp_f(-LOAD(o, mask0 + 2 + k)));
        }
    }
    return 0;
}

/* the doubled, warped channels [first, first + groups * per) of one image of ``out``
 * (flows at ``flow0``, 2 per group) at (X, Y), into ``dst``: the bilinear sample of
 * the doubled map is a 3 x 3 weighted sum of the undoubled one (``spread``), set up
 * for all groups at once (vectorised) and then summed group by group */
static inline void NAME(warped)(const T *image, int h, int w, int c, int first,
                                 int flow0, int groups, int per, int X, int Y,
                                 float *restrict dst) {
    taps here = taps_at(X, Y, h, w);
    const T *f00 = image + (long)here.o00 * c + flow0;
    const T *f01 = image + (long)here.o01 * c + flow0;
    const T *f10 = image + (long)here.o10 * c + flow0;
    const T *f11 = image + (long)here.o11 * c + flow0;
    float wx[3][MAX_GROUPS], wy[3][MAX_GROUPS];
    int32_t col[MAX_GROUPS], row[MAX_GROUPS];
    for (int g = 0; g < groups; g++) {
        float fx = LERP(LERP(LOAD(f00, 2 * g), LOAD(f01, 2 * g)),
                        LERP(LOAD(f10, 2 * g), LOAD(f11, 2 * g)));
        float fy = LERP(LERP(LOAD(f00, 2 * g + 1), LOAD(f01, 2 * g + 1)),
                        LERP(LOAD(f10, 2 * g + 1), LOAD(f11, 2 * g + 1)));
        col[g] = spread(X + 2.0f * fx, w, wx[0] + g, wx[1] + g, wx[2] + g);
        row[g] = spread(Y + 2.0f * fy, h, wy[0] + g, wy[1] + g, wy[2] + g);
    }
    for (int g = 0; g < groups; g++) {
        float *restrict d = dst + g * per;
        const T *q[9];
        float wq[9];
        for (int a = 0; a < 3; a++) {
            int r = row[g] + a < h ? row[g] + a : h - 1;
            for (int b = 0; b < 3; b++) {
                int k = col[g] + b < w ? col[g] + b : w - 1;
                wq[3 * a + b] = wy[a][g] * wx[b][g];
                q[3 * a + b] = image + ((long)r * w + k) * c + first + g * per;
            }
        }
        if (per == 4) { /* CoNR's last levels: unrolled and vectorised */
            for (int j = 0; j < 4; j++) {
                float sum = 0.0f;
                for (int t = 0; t < 9; t++) sum += wq[t] * LOAD(q[t], j);
                d[j] = sum;
            }
        } else { /* 16 channels at a time, their sums kept in one vector across the
                  * nine taps (summing into d tap by tap was 2x slower at 64-128 px) */
            int j = 0;
            for (; j + 16 <= per; j += 16)
                for (int k = 0; k < 16; k++) {
                    float sum = 0.0f;
                    for (int t = 0; t < 9; t++) sum += wq[t] * LOAD(q[t], j + k);
                    d[j + k] = sum;
                }
            for (; j < per; j++) {
                float sum = 0.0f;
                for (int t = 0; t < 9; t++) sum += wq[t] * LOAD(q[t], j);
                d[j] = sum;
            }
        }
    }
}

int NAME(next)(const T *out, const float *low, const float *sheet, int sheet_shared,
                int sheet_c, int frames, int views, int h, int w, int c, int msg0, int m,
                int mflow0, int loc0, int l, int lflow0, int groups, T *view_in,
                int view_c, T *frame_in, int frame_c, int frame0, float *flow_out,
                int row0, int row1) {
    int H = 2 * h, W = 2 * w, lc = 3 + m;
    if (m > MAX_CHANNELS || l > MAX_CHANNELS || sheet_c > MAX_CHANNELS) return 1;
    if (groups < 1 || groups > MAX_GROUPS || m % groups || l % groups) return 1;
    if (view_c != 2 + sheet_c + l || frame_c < frame0 + 6 + m) return 1;
    float weight[MAX_CHANNELS + 1], e[MAX_CHANNELS + 1];
    float num[MAX_CHANNELS + 1], den[MAX_CHANNELS + 1];
    float msg[MAX_CHANNELS], sampled[MAX_CHANNELS];
    for (int row = row0; row < row1 && row < frames * H; row++) {
        int f = row / H, Y = row % H;
        for (int X = 0; X < W; X++) {
            float mixed[6] = {0, 0, 0, 0, 0, 0};
            for (int k = 0; k <= m; k++) num[k] = den[k] = 0.0f;
            taps here = taps_at(X, Y, h, w);
            for (int v = 0; v < views; v++) {
                int img = f * views + v;
                const T *image = out + (long)img * h * w * c;
                const float *lo = low + (long)img * h * w * lc;
                const float *a = lo + (long)here.o00 * lc, *b = lo + (long)here.o01 * lc;
                const float *d = lo + (long)here.o10 * lc, *u = lo + (long)here.o11 * lc;
                /* the mask weights: sigmoid, doubled, then mask * exp(mask) */
                for (int k = 0; k <= m; k++) {
                    float mask = LERP(LERP(a[2 + k], b[2 + k]), LERP(d[2 + k], u[2 + k]));
                    e[k] = exp_f(mask);
                    weight[k] = mask * e[k];
                    den[k] += e[k];
                }
                float fx = 2.0f * LERP(LERP(a[0], b[0]), LERP(d[0], u[0]));
                float fy = 2.0f * LERP(LERP(a[1], b[1]), LERP(d[1], u[1]));
                long pixel = ((long)img * H + Y) * W + X;
                flow_out[2 * pixel] = fx;
                flow_out[2 * pixel + 1] = fy;
                T *vin = view_in + pixel * view_c;
                vin[0] = STORE(fx);
                vin[1] = STORE(fy);
                /* the sheet (RGBA, then features) warped by the flow */
                const float *sh = sheet + (long)(sheet_shared ? v : img) * H * W * sheet_c;
                corners at = corners_at(X + fx, Y + fy, H, W);
                const float *s00 = sh + ((long)at.y0 * W + at.x0) * sheet_c;
                const float *s01 = sh + ((long)at.y0 * W + at.x1) * sheet_c;
                const float *s10 = sh + ((long)at.y1 * W + at.x0) * sheet_c;
                const float *s11 = sh + ((long)at.y1 * W + at.x1) * sheet_c;
                for (int j = 0; j < sheet_c; j++)
                    sampled[j] = at.w00 * s00[j] + at.w01 * s01[j] + at.w10 * s10[j]
                               + at.w11 * s11[j];
                for (int j = 0; j < sheet_c; j++) vin[2 + j] = STORE(sampled[j]);
                mixed[0] += weight[0] * fx;
                mixed[1] += weight[0] * fy;
                for (int j = 0; j < 4; j++) mixed[2 + j] += weight[0] * sampled[j];
                /* the messages, doubled and warped by their own doubled flows */
                NAME(warped)(image, h, w, c, msg0, mflow0, groups, m / groups, X, Y, msg);
                for (int j = 0; j < m; j++) num[1 + j] += weight[1 + j] * msg[j];
                if (l) {
                    NAME(warped)(image, h, w, c, loc0, lflow0, groups, l / groups, X, Y,
                                  sampled);
                    for (int j = 0; j < l; j++) vin[2 + sheet_c + j] = STORE(sampled[j]);
                }
            }
            T *fin = frame_in + (((long)f * H + Y) * W + X) * frame_c + frame0;
            for (int j = 0; j < 6; j++) fin[j] = STORE(mixed[j] / den[0]);
            for (int j = 0; j < m; j++) fin[6 + j] = STORE(num[1 + j] / den[1 + j]);
        }
    }
    return 0;
}

#endif
