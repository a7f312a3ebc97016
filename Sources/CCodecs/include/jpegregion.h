// Decoding a region of a JPEG through libjpeg-turbo's libjpeg API: DCT-domain scaling by
// 1/denom, jpeg_crop_scanline for the columns (widened to whole iMCUs) and jpeg_skip_scanlines
// for the rows above, stopping after the last row needed.
#ifndef JPEGREGION_H
#define JPEGREGION_H
#include <stddef.h>
#include <stdint.h>

/// Decodes rows [y0, y0 + rows) and at least columns [x0, x0 + cols) of the image scaled by
/// 1/denom (coordinates in the scaled image) into `out`, `*out_cols` pixels a row starting at
/// column `*out_x0`, `*channels` bytes a pixel (1 gray, 3 RGB, 4 CMYK as stored). `out` must
/// hold rows * scaled width * 4 bytes. A file that ends early is an error, other warnings are
/// not (as PIL). Returns 0, or -1 with a message in `error`.
int wb_jpeg_decode_region(const uint8_t *data, size_t size, int denom, int y0, int rows, int x0, int cols,
                          uint8_t *out, size_t out_size, int *out_x0, int *out_cols, int *channels,
                          char *error, size_t error_size);

#endif
