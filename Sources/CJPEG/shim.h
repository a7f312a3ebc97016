// libjpeg-turbo's libjpeg API (pkg-config libjpeg; Debian: libjpeg62-turbo-dev), for decoding only
// the rows and columns a crop needs (TurboJPEG 2.1 has no cropped decompression). Swift cannot
// use its setjmp error handling, so decoding goes through the C target CCodecs.
#include <stdio.h>
#include <jpeglib.h>
