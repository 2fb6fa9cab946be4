/*
 * etcd/record.c -- who wrote a key: the holder record atomrun keeps as the
 * value of its lock keys (etcd/lock.c) and of a create's creator record
 * (etcd/kv.c), and reading one back into an atomrun_etcd_holder.  Every
 * text field another client could have written is escaped as a file
 * holder's command line is (core/procinfo.c), and credentials never reach
 * a record.
 */
#define _GNU_SOURCE
#include "etcd/internal.h"
#include "core/internal.h"      /* ar_cmdline, ar_escape */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Remove userinfo ("user:password@") from URLs in s, in place: the command
 * line a record shows may carry an endpoint with its password. */
static void scrub_userinfo(char *s)
{
    char *p = s;
    while ((p = strstr(p, "://")) != NULL) {
        char *auth = p + 3, *end = auth, *at = NULL;
        while (*end && *end != '/' && *end != ' ' && *end != '\t' && *end != '\n') {
            if (*end == '@')
                at = end;
            end++;
        }
        if (at)
            memmove(auth, at + 1, strlen(at + 1) + 1);
        p = auth;
    }
}

/*
 * Who wrote a key, as JSON text (malloc'd): host, pid, cmd (cmd NULL: this
 * process's command line; credentials stripped either way), since (UTC),
 * mode when mode is not NULL, and slots when it is "semaphore".  The lock
 * queue's keys carry it, and so does the creator record of atomrun.create
 * on a key (etcd/kv.c).
 */
char *ar_writer_record(const char *cmd_given, const char *mode, int slots)
{
    char host[256] = "", cmd[512], since[32];
    time_t t = time(NULL);
    struct tm tm;
    json_t *v;
    char *text;

    gethostname(host, sizeof host - 1);
    if (cmd_given) {
        ar_strlcpy(cmd, cmd_given, sizeof cmd);
        scrub_userinfo(cmd);
    } else {
        /* credentials stripped: a URL on the command line may carry a
         * password */
        ar_cmdline(0, cmd, sizeof cmd);
        scrub_userinfo(cmd);
    }
    gmtime_r(&t, &tm);
    strftime(since, sizeof since, "%Y-%m-%dT%H:%M:%SZ", &tm);
    v = json_pack("{s:s, s:I, s:s, s:s}", "host", host,
                  "pid", (json_int_t)getpid(), "cmd", cmd, "since", since);
    if (v && mode)
        json_object_set_new(v, "mode", json_string(mode));
    if (v && mode && strcmp(mode, "semaphore") == 0)
        json_object_set_new(v, "slots", json_integer(slots));
    if (!v)
        return NULL;
    text = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    return text;
}

/* A record's text field into dst, escaped: whoever could write the key
 * chose these bytes (another user's command line, a host name, or any
 * client of the cluster), and a raw ESC in a busy message or in `atomrun
 * who` would let them rewrite our terminal.  The same rule as a file
 * holder's /proc command line (core/procinfo.c). */
static void record_text(const json_t *record, const char *field, char *dst, size_t size)
{
    const json_t *v = json_object_get(record, field);
    if (json_is_string(v))
        ar_escape(dst, size, (const unsigned char *)json_string_value(v),
                  json_string_length(v));
}

/*
 * "2026-12-07T20:08:00Z" (what ar_writer_record writes) as seconds since
 * the epoch, so that `since` is one type for file and etcd holders (an
 * int64, as atomrun_holder's).  0 when the text is anything else (a record
 * another program wrote): unknown, never guessed.
 */
static int64_t utc_seconds(const char *text)
{
    struct tm tm;
    int n = 0;
    memset(&tm, 0, sizeof tm);
    if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2dZ%n", &tm.tm_year, &tm.tm_mon,
               &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 ||
        text[n] != '\0' || tm.tm_year < 1970 || tm.tm_mon < 1 || tm.tm_mon > 12)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    return t > 0 ? (int64_t)t : 0;
}

void ar_writer_of(const json_t *record, atomrun_etcd_holder *h)
{
    const json_t *since;
    if (!json_is_object(record))
        return;
    since = json_object_get(record, "since");
    h->pid = (pid_t)ar_json_int64(record, "pid");
    record_text(record, "host", h->host, sizeof h->host);
    record_text(record, "cmd", h->cmd, sizeof h->cmd);
    h->since = json_is_string(since) ? utc_seconds(json_string_value(since)) : 0;
}
