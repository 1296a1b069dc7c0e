/* CoNR's last shader level in one pass (models/conr/last_level.py).
 *
 * The last block's output holds, per sheet view and pixel, a message (m channels), one
 * flow per group of m / groups message channels, and a mask logit per message channel.
 * The shaded message at a pixel is the views' messages, each warped by its own flows
 * (bilinear, border clamp, the sample at x + flow), mixed by mask * softmax over views
 * of the mask, with mask = sigmoid(logit):
 *
 *     out[c] = sum_v mask_v[c] exp(mask_v[c]) warped_v[c] / sum_v exp(mask_v[c])
 *
 * The torch path runs this as a dozen passes over 256 px maps; here it is one loop.
 * Maps are channels-last (pixel-major), fp32 or bf16 in, fp32 out. The caller splits
 * the rows (frame * height + y) between threads.
 */
#include <stdint.h>

static inline float as_float(uint32_t u) {
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
}

/* exp, written so that the compiler vectorises it: x = n ln 2 + r, a degree-7 polynomial
 * for e^r, 2^n from the exponent bits; a few ulp from expf over the clamped range */
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

#define MAX_CHANNELS 1024
#define MAX_GROUPS 256

#define LOAD_F32(p, i) ((p)[i])
#define LOAD_BF16(p, i) as_float((uint32_t)(p)[i] << 16)

#define LAST_LEVEL(NAME, T, LOAD)                                                            \
    static void NAME##_weights(const T *restrict logit, int m, float *restrict weight,       \
                               float *restrict total) {                                      \
        for (int k = 0; k < m; k++) {                                                        \
            float mask = 1.0f / (1.0f + exp_f(-LOAD(logit, k)));                             \
            float e = exp_f(mask);                                                           \
            weight[k] = mask * e;                                                            \
            total[k] += e;                                                                   \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    int NAME(const T *in, int frames, int views, int h, int w, int c, int msg0, int flow0,   \
             int mask0, int m, int groups, float *out, int row0, int row1) {                 \
        if (m > MAX_CHANNELS || groups > MAX_GROUPS || groups < 1 || m % groups) return 1;   \
        int per = m / groups;                                                                \
        float num[MAX_CHANNELS], den[MAX_CHANNELS], weight[MAX_CHANNELS];                    \
        float fx[MAX_GROUPS], fy[MAX_GROUPS], ax[MAX_GROUPS], ay[MAX_GROUPS];                \
        int32_t o00[MAX_GROUPS], o01[MAX_GROUPS], o10[MAX_GROUPS], o11[MAX_GROUPS];          \
        for (int row = row0; row < row1 && row < frames * h; row++) {                        \
            int f = row / h, y = row % h;                                                    \
            for (int x = 0; x < w; x++) {                                                    \
                for (int k = 0; k < m; k++) num[k] = den[k] = 0.0f;                          \
                for (int v = 0; v < views; v++) {                                            \
                    const T *image = in + (long)(f * views + v) * h * w * c;                 \
                    const T *here = image + ((long)y * w + x) * c;                           \
                    NAME##_weights(here + mask0, m, weight, den);                            \
                    for (int g = 0; g < groups; g++) {                                       \
                        fx[g] = LOAD(here, flow0 + 2 * g);                                   \
                        fy[g] = LOAD(here, flow0 + 2 * g + 1);                               \
                    }                                                                        \
                    for (int g = 0; g < groups; g++) {                                       \
                        float ix = x + fx[g], iy = y + fy[g];                                \
                        ix = ix < 0.0f ? 0.0f : ix;                                          \
                        ix = ix > w - 1 ? (float)(w - 1) : ix;                               \
                        iy = iy < 0.0f ? 0.0f : iy;                                          \
                        iy = iy > h - 1 ? (float)(h - 1) : iy;                               \
                        int x0 = (int)ix, y0 = (int)iy; /* >= 0: truncation is floor */      \
                        /* at the last row or column the far neighbour has weight 0 */       \
                        int dx = x0 + 1 < w ? c : 0, dy = y0 + 1 < h ? w * c : 0;            \
                        ax[g] = ix - x0;                                                     \
                        ay[g] = iy - y0;                                                     \
                        o00[g] = (y0 * w + x0) * c + msg0 + g * per;                         \
                        o01[g] = o00[g] + dx;                                                \
                        o10[g] = o00[g] + dy;                                                \
                        o11[g] = o00[g] + dx + dy;                                           \
                    }                                                                        \
                    for (int g = 0; g < groups; g++) {                                       \
                        float bx = ax[g], by = ay[g];                                        \
                        float w00 = (1 - bx) * (1 - by), w01 = bx * (1 - by);                \
                        float w10 = (1 - bx) * by, w11 = bx * by;                            \
                        const T *p00 = image + o00[g], *p01 = image + o01[g];                \
                        const T *p10 = image + o10[g], *p11 = image + o11[g];                \
                        float *acc = num + g * per;                                          \
                        const float *wt = weight + g * per;                                  \
                        if (per == 4) { /* CoNR's: unrolled and vectorised */                \
                            for (int j = 0; j < 4; j++)                                      \
                                acc[j] += wt[j] * (w00 * LOAD(p00, j) + w01 * LOAD(p01, j)   \
                                                   + w10 * LOAD(p10, j) + w11 * LOAD(p11, j)); \
                        } else {                                                             \
                            for (int j = 0; j < per; j++)                                    \
                                acc[j] += wt[j] * (w00 * LOAD(p00, j) + w01 * LOAD(p01, j)   \
                                                   + w10 * LOAD(p10, j) + w11 * LOAD(p11, j)); \
                        }                                                                    \
                    }                                                                        \
                }                                                                            \
                float *o = out + ((long)row * w + x) * m;                                    \
                for (int k = 0; k < m; k++) o[k] = num[k] / den[k];                          \
            }                                                                                \
        }                                                                                    \
        return 0;                                                                            \
    }

LAST_LEVEL(last_level_f32, float, LOAD_F32)
LAST_LEVEL(last_level_bf16, uint16_t, LOAD_BF16)
