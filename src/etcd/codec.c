/*
 * etcd/codec.c -- the small helpers every etcd file uses: bounded copies and
 * error messages, base64 (the gateway's keys and values), int64 fields that
 * the gateway prints as strings, and the end of a key prefix's range.
 */
#define _GNU_SOURCE
#include "etcd/internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ar_strlcpy(char *dst, const char *src, size_t size)
{
    size_t n;
    if (size == 0)
        return;
    n = strlen(src);
    if (n >= size)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void ar_seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *ar_b64_encode(const void *data, size_t len)
{
    const unsigned char *p = data;
    size_t i, o = 0;
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (!out)
        return NULL;
    for (i = 0; i + 2 < len; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64chars[v >> 18 & 63];
        out[o++] = b64chars[v >> 12 & 63];
        out[o++] = b64chars[v >> 6 & 63];
        out[o++] = b64chars[v & 63];
    }
    if (i < len) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)p[i + 1] << 8;
        out[o++] = b64chars[v >> 18 & 63];
        out[o++] = b64chars[v >> 12 & 63];
        out[o++] = i + 1 < len ? b64chars[v >> 6 & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return out;
}

static int b64val(int ch)
{
    const char *q;
    if (ch == '\0')
        return -1;
    q = strchr(b64chars, ch);
    return q ? (int)(q - b64chars) : -1;
}

int ar_b64_decode(const char *s, char **out, size_t *len)
{
    size_t n = strlen(s), o = 0, i;
    unsigned acc = 0;
    int bits = 0;
    char *buf = malloc(n / 4 * 3 + 4);
    if (!buf)
        return -ENOMEM;
    for (i = 0; i < n && s[i] != '='; i++) {
        int v = b64val((unsigned char)s[i]);
        if (v < 0) {
            free(buf);
            return -EPROTO;
        }
        acc = acc << 6 | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (char)(acc >> bits & 0xff);
        }
    }
    buf[o] = '\0';
    *out = buf;
    *len = o;
    return 0;
}

json_t *ar_json_b64(const void *data, size_t len)
{
    char *e = ar_b64_encode(data, len);
    json_t *j;
    if (!e)
        return NULL;
    j = json_string(e);
    free(e);
    return j;
}

int64_t ar_json_int64(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_integer(v))
        return (int64_t)json_integer_value(v);
    if (json_is_string(v))
        return strtoll(json_string_value(v), NULL, 10);
    return 0;
}

char *ar_prefix_end(const char *prefix, size_t len, size_t *outlen)
{
    char *end = malloc(len + 1);
    size_t n = len;
    if (!end)
        return NULL;
    memcpy(end, prefix, len);
    /* etcd's rule: increment the last byte that is not 0xff, drop the rest. */
    while (n > 0 && (unsigned char)end[n - 1] == 0xff)
        n--;
    if (n == 0) {                   /* all 0xff: "to the end of the keyspace" */
        end[0] = '\0';
        *outlen = 1;
        return end;
    }
    end[n - 1] = (char)((unsigned char)end[n - 1] + 1);
    end[n] = '\0';
    *outlen = n;
    return end;
}

/* Compact JSON text of body (malloc'd), body freed; NULL (no memory) when
 * body is NULL or cannot be printed. */
char *ar_dumps_taken(json_t *body)
{
    char *text;
    if (!body)
        return NULL;
    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return text;
}

atomrun_err *ar_err_start(atomrun_err *err, atomrun_err *own)
{
    if (!err)
        err = own;
    memset(err, 0, sizeof *err);
    return err;
}

double ar_deadline_in(double timeout)
{
    /* 0 stays 0: ar_etcd_post's own default, now + op_timeout. */
    return timeout > 0 ? ar_now() + timeout : timeout < 0 ? 1e300 : 0;
}
