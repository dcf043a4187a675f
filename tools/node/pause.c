/* The pod sandbox ("pause") image's only program, built static by tools/node.sh since no pause image can be
 * pulled here. It holds the pod's namespaces: it sleeps until SIGTERM or SIGINT and reaps any child
 * re-parented to it (it is PID 1 when the pod shares its process namespace). */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) {
    (void)sig;
    _exit(0);
}

static void reap(int sig) {
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    (void)sig;
}

int main(void) {
    struct sigaction term = {.sa_handler = quit}, child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
    sigaction(SIGTERM, &term, NULL);
    sigaction(SIGINT, &term, NULL);
    sigaction(SIGCHLD, &child, NULL);
    for (;;) pause();
    return 0;
}
