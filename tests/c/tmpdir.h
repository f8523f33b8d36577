/*
 * tmpdir.h — private temporary directories for the deepspeed_rs C tests (op caches).
 *
 *  test_tmpdir_new(prefix)  a new directory $TMPDIR/<prefix>.XXXXXX (default /tmp), mode
 *                           0700 (mkdtemp), as a malloc'd path; exits on failure.
 *  test_tmpdir_remove(path) rm -rf: files, links and directories, without following links;
 *                           directories are made 0700 first (tests chmod some of them 0777).
 */
#ifndef DSRS_TESTS_TMPDIR_H
#define DSRS_TESTS_TMPDIR_H

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static inline char *test_tmpdir_new(const char *prefix) {
  const char *tmp = getenv("TMPDIR");
  if (tmp == NULL || *tmp == '\0') tmp = "/tmp";
  size_t n = strlen(tmp) + strlen(prefix) + 16;
  char *path = (char *)malloc(n);
  if (path == NULL) exit(1);
  snprintf(path, n, "%s/%s.XXXXXX", tmp, prefix);
  if (mkdtemp(path) == NULL) {
    fprintf(stderr, "mkdtemp(%s): %s\n", path, strerror(errno));
    exit(1);
  }
  return path;
}

static inline void test_tmpdir_remove(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    chmod(path, 0700);
    DIR *d = opendir(path);
    if (d != NULL) {
      struct dirent *e;
      while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        size_t n = strlen(path) + strlen(e->d_name) + 2;
        char *child = (char *)malloc(n);
        if (child == NULL) exit(1);
        snprintf(child, n, "%s/%s", path, e->d_name);
        test_tmpdir_remove(child);
        free(child);
      }
      closedir(d);
    }
    if (rmdir(path) != 0) fprintf(stderr, "warning: cannot remove %s: %s\n", path, strerror(errno));
  } else if (unlink(path) != 0) {
    fprintf(stderr, "warning: cannot remove %s: %s\n", path, strerror(errno));
  }
}

#endif /* DSRS_TESTS_TMPDIR_H */
