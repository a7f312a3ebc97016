// PNG decoding through libpng with its setjmp error handling kept in C, where it belongs.
#ifndef PNGDECODE_H
#define PNGDECODE_H
#include <stddef.h>
#include <stdint.h>

/// The size and output layout of a PNG in memory: channels 1 (gray) or 3 (RGB: palettes are
/// expanded, alpha is dropped), depth 8, or 16 for 16-bit gray (big-endian samples). Returns 0,
/// or -1 with a message in `error`.
int wb_png_info(const uint8_t *data, size_t size, uint32_t *width, uint32_t *height, int *channels, int *depth,
                char *error, size_t error_size);

/// Decodes into `out` (height * width * channels * depth / 8 bytes, rows top to bottom) in the
/// layout wb_png_info gives. Returns 0, or -1 with a message in `error`.
int wb_png_decode(const uint8_t *data, size_t size, uint8_t *out, size_t out_size, char *error, size_t error_size);

#endif
