/* The two transforms of Winograd's F(4x4, 3x3) for fp32 on a CPU (models/winograd.py).
 *
 * Done as torch passes, the input transform (each 6x6 input tile to B^T d B) and the
 * output transform (each 6x6 tile of products to A^T m A, 4x4 pixels) took about twice
 * as long as the 36 matrix products between them: a dozen passes over maps larger than
 * the cache. Here each is one pass over a chunk of tiles small enough to stay in cache
 * between the transform and the products, which torch multiplies (torch.bmm). F(4x4,
 * 3x3) runs the 3x3 convolutions, F(4x4, 2x2) below the transposed ones.
 *
 * Maps are channels-last (pixel-major). Tiles are numbered over (image, tile row, tile
 * column); a chunk of `count` tiles from tile `first` is laid out as (36, count,
 * channels). The caller splits a chunk's tiles [lo, hi) between threads.
 */
#include <stdint.h>
#include <string.h>

#define BLOCK 64          /* channels transformed together: 6 x 6 x 64 floats stay in L1 */
#define MAX_CHANNELS 8192 /* the zero row read beyond the image's border (winograd.py C_MAX_CHANNELS) */

static const float zeros[MAX_CHANNELS];

/* input pixel (y, xx) of an image, or the row of zeros beyond its border */
static inline const float *pixel(const float *x, long image, int h, int w, int c, long y,
                                 long xx) {
    if (y < 0 || y >= h || xx < 0 || xx >= w)
        return zeros;
    return x + ((image * h + y) * w + xx) * c;
}

/* B^T d for six rows d0..d5 of `n` values, into t0..t5 */
static inline void input_rows(const float *restrict d0, const float *restrict d1,
                              const float *restrict d2, const float *restrict d3,
                              const float *restrict d4, const float *restrict d5, int n,
                              float *restrict t0, float *restrict t1, float *restrict t2,
                              float *restrict t3, float *restrict t4, float *restrict t5) {
    for (int i = 0; i < n; i++) {
        float a = d4[i] - d2[i], b = d3[i] - d1[i];
        t0[i] = 4.0f * (d0[i] - d2[i]) + a;
        t1[i] = (d3[i] + d4[i]) - 4.0f * (d1[i] + d2[i]);
        t2[i] = (d4[i] - d3[i]) + 4.0f * (d1[i] - d2[i]);
        t3[i] = a + 2.0f * b;
        t4[i] = a - 2.0f * b;
        t5[i] = (d5[i] - d3[i]) + 4.0f * (d1[i] - d3[i]);
    }
}

/* The input transform of tiles [lo, hi) of the chunk starting at tile `first`:
 * x (images, h, w, c) -> v (36, count, c). Returns 1 when c is beyond MAX_CHANNELS. */
int winograd_input(const float *restrict x, int h, int w, int c, long first, long count,
                   long lo, long hi, float *restrict v) {
    if (c > MAX_CHANNELS)
        return 1;
    const long tw = w / 4, th = h / 4, plane = count * (long)c;
    float rows[6][6][BLOCK];
    for (long t = lo; t < hi; t++) {
        long tile = first + t, image = tile / (th * tw), rest = tile % (th * tw);
        int y0 = (int)(rest / tw) * 4 - 1, x0 = (int)(rest % tw) * 4 - 1;
        const float *p[6][6];
        for (int i = 0; i < 6; i++)
            for (int j = 0; j < 6; j++)
                p[i][j] = pixel(x, image, h, w, c, y0 + i, x0 + j);
        for (int c0 = 0; c0 < c; c0 += BLOCK) {
            int n = c - c0 < BLOCK ? c - c0 : BLOCK;
            /* down the columns: rows[i][j] = (B^T d)[i][j] */
            for (int j = 0; j < 6; j++)
                input_rows(p[0][j] + c0, p[1][j] + c0, p[2][j] + c0, p[3][j] + c0,
                           p[4][j] + c0, p[5][j] + c0, n, rows[0][j], rows[1][j],
                           rows[2][j], rows[3][j], rows[4][j], rows[5][j]);
            /* along the rows, straight into the chunk */
            float *out = v + t * c + c0;
            for (int i = 0; i < 6; i++)
                input_rows(rows[i][0], rows[i][1], rows[i][2], rows[i][3], rows[i][4],
                           rows[i][5], n, out + (6 * i) * plane, out + (6 * i + 1) * plane,
                           out + (6 * i + 2) * plane, out + (6 * i + 3) * plane,
                           out + (6 * i + 4) * plane, out + (6 * i + 5) * plane);
        }
    }
    return 0;
}

/* one output pixel's `n` channels, plus their bias (or none) */
static inline void store(float *restrict to, const float *restrict pixel,
                         const float *restrict bias, int n) {
    if (bias)
        for (int i = 0; i < n; i++)
            to[i] = pixel[i] + bias[i];
    else
        memcpy(to, pixel, n * sizeof(float));
}

/* A^T m for six rows m0..m5 of `n` values, into o0..o3 */
static inline void output_rows(const float *restrict m0, const float *restrict m1,
                               const float *restrict m2, const float *restrict m3,
                               const float *restrict m4, const float *restrict m5, int n,
                               float *restrict o0, float *restrict o1, float *restrict o2,
                               float *restrict o3) {
    for (int i = 0; i < n; i++) {
        float s12 = m1[i] + m2[i], d12 = m1[i] - m2[i];
        float s34 = m3[i] + m4[i], d34 = m3[i] - m4[i];
        o0[i] = m0[i] + s12 + s34;
        o1[i] = d12 + 2.0f * d34;
        o2[i] = s12 + 4.0f * s34;
        o3[i] = d12 + 8.0f * d34 + m5[i];
    }
}

/* The output transform of tiles [lo, hi) of the chunk starting at tile `first`:
 * m (36, count, out) -> y (images, h, w, out), plus bias (or NULL). */
int winograd_output(const float *restrict m, int h, int w, int out,
                    const float *restrict bias, long first, long count, long lo, long hi,
                    float *restrict y) {
    const long tw = w / 4, th = h / 4, plane = count * (long)out;
    float cols[6][4][BLOCK], pixels[4][4][BLOCK];
    for (long t = lo; t < hi; t++) {
        long tile = first + t, image = tile / (th * tw), rest = tile % (th * tw);
        long y0 = (rest / tw) * 4, x0 = (rest % tw) * 4;
        for (int o0 = 0; o0 < out; o0 += BLOCK) {
            int n = out - o0 < BLOCK ? out - o0 : BLOCK;
            const float *in = m + t * out + o0;
            /* along each row of products: cols[i][q] = (m A)[i][q] */
            for (int i = 0; i < 6; i++)
                output_rows(in + (6 * i) * plane, in + (6 * i + 1) * plane,
                            in + (6 * i + 2) * plane, in + (6 * i + 3) * plane,
                            in + (6 * i + 4) * plane, in + (6 * i + 5) * plane, n, cols[i][0],
                            cols[i][1], cols[i][2], cols[i][3]);
            for (int q = 0; q < 4; q++)
                output_rows(cols[0][q], cols[1][q], cols[2][q], cols[3][q], cols[4][q],
                            cols[5][q], n, pixels[0][q], pixels[1][q], pixels[2][q],
                            pixels[3][q]);
            for (int p = 0; p < 4; p++)
                for (int q = 0; q < 4; q++) {
                    float *to = y + ((image * h + y0 + p) * (long)w + x0 + q) * out + o0;
                    store(to, pixels[p][q], bias ? bias + o0 : 0, n);
                }
        }
    }
    return 0;
}

/* ---- F(4x4, 2x2): the four 2x2 convolutions, one per output phase, of a stride-2 4x4
 * transposed convolution (models/winograd.py, conv_transpose4x4): 25 products per 4x4
 * positions against the 36 of F(4x4, 3x3) on the phases embedded in a 3x3 convolution.
 * Interpolation points 0, 1, -1, 2 and infinity. Sample (i, j) of tile (ty, tx) is input
 * pixel (4 ty + i - 1, 4 tx + j - 1); position (u, v) = (4 ty + p, 4 tx + q).
 */

/* B^T d for five rows of `n` values */
static inline void input_rows5(const float *restrict d0, const float *restrict d1,
                               const float *restrict d2, const float *restrict d3,
                               const float *restrict d4, int n, float *restrict t0,
                               float *restrict t1, float *restrict t2, float *restrict t3,
                               float *restrict t4) {
    for (int i = 0; i < n; i++) {
        float a = d3[i] - d1[i];
        t0[i] = 2.0f * (d0[i] - d2[i]) + a;
        t1[i] = d3[i] - d2[i] - 2.0f * d1[i];
        t2[i] = d3[i] - 3.0f * d2[i] + 2.0f * d1[i];
        t3[i] = a;
        t4[i] = d4[i] - d2[i] + 2.0f * (d1[i] - d3[i]);
    }
}

/* The input transform of tiles [lo, hi) of the chunk from tile `first` over a grid of
 * th x tw tiles per image: x (images, h, w, c) -> v (25, count, c). */
int winograd2_input(const float *restrict x, int h, int w, int c, long th, long tw,
                    long first, long count, long lo, long hi, float *restrict v) {
    if (c > MAX_CHANNELS)
        return 1;
    const long plane = count * (long)c;
    float rows[5][5][BLOCK];
    for (long t = lo; t < hi; t++) {
        long tile = first + t, image = tile / (th * tw), rest = tile % (th * tw);
        long y0 = (rest / tw) * 4 - 1, x0 = (rest % tw) * 4 - 1;
        const float *s[5][5];
        for (int i = 0; i < 5; i++)
            for (int j = 0; j < 5; j++)
                s[i][j] = pixel(x, image, h, w, c, y0 + i, x0 + j);
        for (int c0 = 0; c0 < c; c0 += BLOCK) {
            int n = c - c0 < BLOCK ? c - c0 : BLOCK;
            for (int j = 0; j < 5; j++)
                input_rows5(s[0][j] + c0, s[1][j] + c0, s[2][j] + c0, s[3][j] + c0,
                            s[4][j] + c0, n, rows[0][j], rows[1][j], rows[2][j], rows[3][j],
                            rows[4][j]);
            float *out = v + t * c + c0;
            for (int i = 0; i < 5; i++)
                input_rows5(rows[i][0], rows[i][1], rows[i][2], rows[i][3], rows[i][4], n,
                            out + (5 * i) * plane, out + (5 * i + 1) * plane,
                            out + (5 * i + 2) * plane, out + (5 * i + 3) * plane,
                            out + (5 * i + 4) * plane);
        }
    }
    return 0;
}

/* A^T m for five rows of `n` values */
static inline void output_rows5(const float *restrict m0, const float *restrict m1,
                                const float *restrict m2, const float *restrict m3,
                                const float *restrict m4, int n, float *restrict o0,
                                float *restrict o1, float *restrict o2, float *restrict o3) {
    for (int i = 0; i < n; i++) {
        float s12 = m1[i] + m2[i], d12 = m1[i] - m2[i];
        o0[i] = m0[i] + s12 + m3[i];
        o1[i] = d12 + 2.0f * m3[i];
        o2[i] = s12 + 4.0f * m3[i];
        o3[i] = d12 + 8.0f * m3[i] + m4[i];
    }
}

/* The output transform of tiles [lo, hi): m (25, count, 4 out) -> y (images, 2 h, 2 w,
 * out), plus bias (or NULL). Position (u, v) of phase (a, b) (product channels
 * (2 a + b) out ..) is pixel (2 (u - a) + a, 2 (v - b) + b), kept where 0 <= u - a < h
 * and 0 <= v - b < w: the tiles cover positions 0 .. h, one more than the input. */
int winograd2_output(const float *restrict m, int out, long h, long w, long th, long tw,
                     const float *restrict bias, long first, long count, long lo, long hi,
                     float *restrict y) {
    const int side = 2;
    const long wide = 4L * out, plane = count * wide, width = 2 * w;
    const long height = 2 * h;
    float cols[5][4][BLOCK], pixels[4][4][BLOCK];
    for (long t = lo; t < hi; t++) {
        long tile = first + t, image = tile / (th * tw), rest = tile % (th * tw);
        long u0 = (rest / tw) * 4, v0 = (rest % tw) * 4;
        for (int a = 0; a < side; a++)
            for (int b = 0; b < side; b++)
                for (int o0 = 0; o0 < out; o0 += BLOCK) {
                    int n = out - o0 < BLOCK ? out - o0 : BLOCK;
                    const float *in = m + t * wide + (a * side + b) * (long)out + o0;
                    for (int i = 0; i < 5; i++)
                        output_rows5(in + (5 * i) * plane, in + (5 * i + 1) * plane,
                                     in + (5 * i + 2) * plane, in + (5 * i + 3) * plane,
                                     in + (5 * i + 4) * plane, n, cols[i][0], cols[i][1],
                                     cols[i][2], cols[i][3]);
                    for (int q = 0; q < 4; q++)
                        output_rows5(cols[0][q], cols[1][q], cols[2][q], cols[3][q],
                                     cols[4][q], n, pixels[0][q], pixels[1][q],
                                     pixels[2][q], pixels[3][q]);
                    for (int p = 0; p < 4; p++) {
                        long row = u0 + p - a;
                        if (row < 0 || row >= h)
                            continue;
                        for (int q = 0; q < 4; q++) {
                            long col = v0 + q - b;
                            if (col < 0 || col >= w)
                                continue;
                            float *to = y + ((image * height + side * row + a) * width +
                                             side * col + b) * out + o0;
                            store(to, pixels[p][q], bias ? bias + o0 : 0, n);
                        }
                    }
                }
    }
    return 0;
}
