// See pngdecode.h. Every libpng error longjmps back to the setjmp in decode_png, which frees the
// read structures and returns the message; warnings are ignored (as PIL does).
#include "pngdecode.h"
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const uint8_t *data;
    size_t size, offset;
    char *error;
    size_t error_size;
} reader_t;

static void on_error(png_structp png, png_const_charp message) {
    reader_t *r = (reader_t *)png_get_error_ptr(png);
    snprintf(r->error, r->error_size, "%s", message);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp message) { (void)png; (void)message; }

static void on_read(png_structp png, png_bytep out, png_size_t length) {
    reader_t *r = (reader_t *)png_get_io_ptr(png);
    if (length > r->size - r->offset) png_error(png, "the file ends early (truncated)");
    memcpy(out, r->data + r->offset, length);
    r->offset += length;
}

// Reads the header, sets the transformations (PIL's convert("RGB") and its 16-bit gray "I;16"),
// and, when out is not NULL, the pixels.
static int decode_png(const uint8_t *data, size_t size, uint8_t *out, size_t out_size, uint32_t *width, uint32_t *height,
                      int *channels, int *depth, char *error, size_t error_size) {
    if (size < 8 || png_sig_cmp(data, 0, 8) != 0) {
        snprintf(error, error_size, "not a PNG file (bad signature)");
        return -1;
    }
    reader_t r = {data, size, 0, error, error_size};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r, on_error, on_warning);
    if (!png) { snprintf(error, error_size, "out of memory"); return -1; }
    png_infop info = png_create_info_struct(png);
    if (!info) { png_destroy_read_struct(&png, NULL, NULL); snprintf(error, error_size, "out of memory"); return -1; }
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        png_free(png, rows);
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    png_set_read_fn(png, &r, on_read);
    // Missing image data and bad CRCs are errors (as PIL's "image file is truncated"), not warnings.
    png_set_benign_errors(png, 0);
    // Refuse decompression bombs as PIL does (178956970 pixels) and keep chunk memory bounded.
    png_set_user_limits(png, 1u << 20, 1u << 20);
    png_set_chunk_malloc_max(png, 64u << 20);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if ((uint64_t)w * h > 178956970ull) png_error(png, "the image has more than 178956970 pixels (a decompression bomb?)");
    int color = png_get_color_type(png, info), bits = png_get_bit_depth(png, info);
    int gray = (color & PNG_COLOR_MASK_COLOR) == 0;
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (gray && bits < 8) png_set_expand_gray_1_2_4_to_8(png);
    // Alpha, and the alpha a palette's or gray image's tRNS chunk expands to, is dropped (convert("RGB")).
    if ((color & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS)) png_set_strip_alpha(png);
    int keep16 = gray && bits == 16 && color == PNG_COLOR_TYPE_GRAY;
    if (bits == 16 && !keep16) png_set_strip_16(png);
    int passes = png_set_interlace_handling(png);
    (void)passes;
    png_read_update_info(png, info);
    int c = gray ? 1 : 3, d = keep16 ? 16 : 8;
    if ((int)png_get_channels(png, info) != c || (int)png_get_bit_depth(png, info) != d) png_error(png, "unsupported PNG layout");
    *width = w; *height = h; *channels = c; *depth = d;
    if (out) {
        size_t stride = (size_t)w * c * (d / 8);
        if (png_get_rowbytes(png, info) != stride || out_size < stride * h) png_error(png, "output buffer too small");
        rows = (png_bytep *)png_malloc(png, sizeof(png_bytep) * h);
        for (png_uint_32 y = 0; y < h; y++) rows[y] = out + y * stride;
        png_read_image(png, rows);
        png_free(png, rows);
        rows = NULL;
    }
    png_destroy_read_struct(&png, &info, NULL);
    return 0;
}

int wb_png_info(const uint8_t *data, size_t size, uint32_t *width, uint32_t *height, int *channels, int *depth,
                char *error, size_t error_size) {
    return decode_png(data, size, NULL, 0, width, height, channels, depth, error, error_size);
}

int wb_png_decode(const uint8_t *data, size_t size, uint8_t *out, size_t out_size, char *error, size_t error_size) {
    uint32_t w, h;
    int c, d;
    return decode_png(data, size, out, out_size, &w, &h, &c, &d, error, error_size);
}
