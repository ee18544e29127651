/* onnxkit BlockMatMul: Y = A · Wᵀ with W held as a GGUF's own quantized blocks, activations in float32.

   W is N×K, stored in records of 16 rows × one block of `block` (16 or 32) columns:

     codes    bits 4: block/2 runs of 16 bytes; byte r of run j = q[r][2j] | q[r][2j+1] << 4 (0..15)
              bits 8: block runs of 16 bytes; byte r of run k = (int8) (q[r][k] − zero_point)
     scales   16 values, fp16 (scale_bits 16) or fp32 (32)
     offsets  16 values as the scales, only when has_offset (then block is 32)

   value[r][k] = scale[r] · (q[r][k] − zero_point) + offset[r] for the block holding k, as ggml
   dequantizes; rows past N are zero padding. Records run along K for one group of 16 rows, then
   the next group. onnxkit.export.kernels.pack writes them. */
#ifndef ONNXKIT_BLOCKMATMUL_H
#define ONNXKIT_BLOCKMATMUL_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t n, k;
    int32_t block, bits, scale_bits, has_offset, zero_point;
} okx_layout;

/* N and K above this are refused: products of sizes then stay far inside int64 */
#define OKX_MAX_DIM ((int64_t)1 << 31)

/* bytes of one record; 0 if the layout is not one this kernel computes */
size_t okx_record_bytes(const okx_layout* layout);

/* up to this many rows of activations, each is multiplied on its own (decode, also batched); above it,
   through a dequantized panel (prefill) */
#define OKX_GEMV_ROWS 4

/* Y[m][16g .. 16g+15] for the row groups g in [g0, g1), m in [0, rows); A is rows × k, Y rows × n.
   `sums` (rows × k/block floats) holds A summed per block; only read when has_offset and
   rows <= OKX_GEMV_ROWS. */
void okx_groups(const okx_layout* layout, const uint8_t* w, const float* a, int64_t rows, const float* sums,
                float* y, int64_t g0, int64_t g1);

/* 1 when this CPU runs the AVX-512 kernel, 0 when it runs the portable one (or ONNXKIT_KERNEL_PORTABLE=1) */
int okx_vectorized(void);

#endif
