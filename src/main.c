/* main.c - the layerlens command line (placeholder until the CLI lands). */
#include <stdio.h>
int main(void) { puts("layerlens"); return 0; }
