// See jpegregion.h. Every libjpeg error longjmps back to the setjmp in wb_jpeg_decode_region.
#include "jpegregion.h"
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

typedef struct {
    struct jpeg_error_mgr pub;
    struct jpeg_progress_mgr progress;
    jmp_buf jump;
    char *error;
    size_t error_size;
} handler_t;

static void on_error(j_common_ptr cinfo) {
    handler_t *h = (handler_t *)cinfo->err;
    char message[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, message);
    snprintf(h->error, h->error_size, "%s", message);
    longjmp(h->jump, 1);
}

// Warnings pass, except the end of the data (PIL: "image file is truncated").
static void on_message(j_common_ptr cinfo, int level) {
    if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
        handler_t *h = (handler_t *)cinfo->err;
        snprintf(h->error, h->error_size, "Premature end of JPEG file (the file is truncated)");
        longjmp(h->jump, 1);
    }
}

// Progressive files of more than 500 scans are refused (TurboJPEG's TJFLAG_LIMITSCANS).
static void on_progress(j_common_ptr cinfo) {
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->inputctl && d->input_scan_number > 500) {
        handler_t *h = (handler_t *)cinfo->err;
        snprintf(h->error, h->error_size, "more than 500 progressive scans (a hostile file?)");
        longjmp(h->jump, 1);
    }
}

int wb_jpeg_decode_region(const uint8_t *data, size_t size, int denom, int y0, int rows, int x0, int cols,
                          uint8_t *out, size_t out_size, int *out_x0, int *out_cols, int *channels,
                          char *error, size_t error_size) {
    struct jpeg_decompress_struct cinfo;
    handler_t h;
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&h.pub);
    h.pub.error_exit = on_error;
    h.pub.emit_message = on_message;
    h.error = error;
    h.error_size = error_size;
    if (setjmp(h.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    h.progress.progress_monitor = on_progress;
    cinfo.progress = &h.progress;
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    int gray = cinfo.num_components == 1;
    cinfo.out_color_space = cmyk ? JCS_CMYK : (gray ? JCS_GRAYSCALE : JCS_RGB);
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned)denom;
    cinfo.dct_method = JDCT_ISLOW;
    jpeg_start_decompress(&cinfo);
    int c = cinfo.output_components;
    if (y0 < 0 || rows <= 0 || x0 < 0 || cols <= 0 || (JDIMENSION)(y0 + rows) > cinfo.output_height ||
        (JDIMENSION)(x0 + cols) > cinfo.output_width) {
        snprintf(error, error_size, "region outside the %ux%u image", cinfo.output_width, cinfo.output_height);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    if ((size_t)rows * cinfo.output_width * 4 > out_size) {
        snprintf(error, error_size, "output buffer too small");
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    JDIMENSION xoffset = (JDIMENSION)x0, width = (JDIMENSION)cols;
    if (width < cinfo.output_width) jpeg_crop_scanline(&cinfo, &xoffset, &width);
    if (y0 > 0) jpeg_skip_scanlines(&cinfo, (JDIMENSION)y0);
    size_t stride = (size_t)width * c;
    for (int y = 0; y < rows;) {
        JSAMPROW row = out + (size_t)y * stride;
        JDIMENSION got = jpeg_read_scanlines(&cinfo, &row, 1);
        if (got == 0) {
            snprintf(error, error_size, "the image data ends early (truncated)");
            jpeg_destroy_decompress(&cinfo);
            return -1;
        }
        y += (int)got;
    }
    jpeg_abort_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    *out_x0 = (int)xoffset;
    *out_cols = (int)width;
    *channels = c;
    return 0;
}
