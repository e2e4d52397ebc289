/*
 * otr_peer: a remote OTR buddy built directly on libotr, driven over stdin/stdout.
 *
 * Tests run it as the "other side" of a private conversation. It does no networking:
 * the test harness carries its messages over a real XMPP server. Everything after the
 * command word is hex-encoded (OTR whitespace tags contain tabs and spaces).
 *
 *   in:  key ACCOUNT | policy manual|opportunistic|require | recv FROM HEX | send TO HEX
 *        query TO | end TO | smpq TO HEXQ HEXSECRET | smps TO HEXSECRET
 *        smpa TO HEXSECRET | trust TO | fp | peerfp TO | state TO | quit
 *   out: inject TO HEX | show FROM HEX | secure FROM | insecure FROM | finished FROM
 *        smp EVENT FROM [HEXQ] | newfp FROM FP | notice FROM TEXT | fp FP | state S
 *        ok | err TEXT      (every command ends with "ok" or "err")
 *
 * Build: gcc -O2 otr_peer.c $(pkg-config --cflags --libs libotr) -lgcrypt
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libotr/proto.h>
#include <libotr/message.h>
#include <libotr/privkey.h>
#include <libotr/userstate.h>
#include <libotr/instag.h>

#define PROTO "prpl-jabber"

static OtrlUserState us;
static char account[512];
static OtrlPolicy policy = OTRL_POLICY_ALLOW_V2 | OTRL_POLICY_ALLOW_V3 |
                           OTRL_POLICY_WHITESPACE_START_AKE | OTRL_POLICY_ERROR_START_AKE |
                           OTRL_POLICY_SEND_WHITESPACE_TAG;
static int max_size = 0;

static void put_hex(const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) printf("%02x", *p);
}

static char *from_hex(const char *h) {
    size_t n = strlen(h) / 2;
    char *out = malloc(n + 1);
    if (!out) exit(2);
    for (size_t i = 0; i < n; i++) {
        unsigned int b;
        if (sscanf(h + 2 * i, "%2x", &b) != 1) b = '?';
        out[i] = (char)b;
    }
    out[n] = 0;
    return out;
}

static OtrlPolicy op_policy(void *o, ConnContext *c) { (void)o; (void)c; return policy; }
static void op_create_privkey(void *o, const char *a, const char *p) { (void)o; (void)a; (void)p; }
static int op_is_logged_in(void *o, const char *a, const char *p, const char *r) {
    (void)o; (void)a; (void)p; (void)r; return 1;
}
static void op_inject(void *o, const char *a, const char *p, const char *to, const char *msg) {
    (void)o; (void)a; (void)p;
    printf("inject %s ", to); put_hex(msg); printf("\n");
}
static void op_update_context_list(void *o) { (void)o; }
static void op_new_fingerprint(void *o, OtrlUserState u, const char *a, const char *p,
                               const char *who, unsigned char fp[20]) {
    (void)o; (void)u; (void)a; (void)p;
    char human[OTRL_PRIVKEY_FPRINT_HUMAN_LEN];
    otrl_privkey_hash_to_human(human, fp);
    printf("newfp %s %s\n", who, human);
}
static void op_write_fingerprints(void *o) { (void)o; }
static void op_gone_secure(void *o, ConnContext *c) { (void)o; printf("secure %s\n", c->username); }
static void op_gone_insecure(void *o, ConnContext *c) { (void)o; printf("insecure %s\n", c->username); }
static void op_still_secure(void *o, ConnContext *c, int r) {
    (void)o; (void)r; printf("secure %s\n", c->username);
}
static int op_max_message_size(void *o, ConnContext *c) { (void)o; (void)c; return max_size; }
static void op_smp(void *o, OtrlSMPEvent ev, ConnContext *c, unsigned short progress, char *q) {
    (void)o; (void)progress;
    const char *name = "other";
    switch (ev) {
    case OTRL_SMPEVENT_ASK_FOR_ANSWER: name = "question"; break;
    case OTRL_SMPEVENT_ASK_FOR_SECRET: name = "secret"; break;
    case OTRL_SMPEVENT_SUCCESS: name = "success"; break;
    case OTRL_SMPEVENT_FAILURE: name = "failure"; break;
    case OTRL_SMPEVENT_ABORT: name = "abort"; break;
    case OTRL_SMPEVENT_CHEATED: case OTRL_SMPEVENT_ERROR: name = "error"; break;
    case OTRL_SMPEVENT_IN_PROGRESS: return;
    default: break;
    }
    printf("smp %s %s", name, c->username);
    if (q) { printf(" "); put_hex(q); }
    printf("\n");
}
static void op_msg_event(void *o, OtrlMessageEvent ev, ConnContext *c, const char *m,
                         gcry_error_t e) {
    (void)o; (void)m; (void)e;
    printf("notice %s %d\n", c ? c->username : "-", (int)ev);
}
static void op_create_instag(void *o, const char *a, const char *p) {
    (void)o; otrl_instag_generate(us, "/dev/null", a, p);
}

static OtrlMessageAppOps ops = {
    .policy = op_policy,
    .create_privkey = op_create_privkey,
    .is_logged_in = op_is_logged_in,
    .inject_message = op_inject,
    .update_context_list = op_update_context_list,
    .new_fingerprint = op_new_fingerprint,
    .write_fingerprints = op_write_fingerprints,
    .gone_secure = op_gone_secure,
    .gone_insecure = op_gone_insecure,
    .still_secure = op_still_secure,
    .max_message_size = op_max_message_size,
    .handle_smp_event = op_smp,
    .handle_msg_event = op_msg_event,
    .create_instag = op_create_instag,
};

static ConnContext *ctx(const char *who) {
    return otrl_context_find(us, who, account, PROTO, OTRL_INSTAG_BEST, 0, NULL, NULL, NULL);
}

static int cmd(char *line) {
    char *w = strtok(line, " \n");
    if (!w) return 1;
    char *a1 = strtok(NULL, " \n"), *a2 = strtok(NULL, " \n"), *a3 = strtok(NULL, " \n");
    if (!strcmp(w, "key") && a1) {
        snprintf(account, sizeof account, "%s", a1);
        char path[] = "/tmp/otr_peer_keyXXXXXX";
        int fd = mkstemp(path);
        if (fd < 0) { printf("err mkstemp\n"); return 1; }
        FILE *f = fdopen(fd, "w+");
        gcry_error_t e = otrl_privkey_generate_FILEp(us, f, account, PROTO);
        fclose(f);
        unlink(path);
        otrl_instag_generate(us, "/dev/null", account, PROTO);
        if (e) { printf("err keygen\n"); return 1; }
    } else if (!strcmp(w, "policy") && a1) {
        OtrlPolicy v = OTRL_POLICY_ALLOW_V2 | OTRL_POLICY_ALLOW_V3;
        if (!strcmp(a1, "opportunistic"))
            v |= OTRL_POLICY_SEND_WHITESPACE_TAG | OTRL_POLICY_WHITESPACE_START_AKE |
                 OTRL_POLICY_ERROR_START_AKE;
        else if (!strcmp(a1, "require"))
            v |= OTRL_POLICY_REQUIRE_ENCRYPTION | OTRL_POLICY_WHITESPACE_START_AKE |
                 OTRL_POLICY_ERROR_START_AKE;
        policy = v;
    } else if (!strcmp(w, "fragment") && a1) {
        max_size = atoi(a1);
    } else if (!strcmp(w, "recv") && a1 && a2) {
        char *body = from_hex(a2), *out = NULL;
        OtrlTLV *tlvs = NULL;
        int internal = otrl_message_receiving(us, &ops, NULL, account, PROTO, a1, body, &out,
                                              &tlvs, NULL, NULL, NULL);
        if (tlvs && otrl_tlv_find(tlvs, OTRL_TLV_DISCONNECTED)) printf("finished %s\n", a1);
        otrl_tlv_free(tlvs);
        if (!internal) { printf("show %s ", a1); put_hex(out ? out : body); printf("\n"); }
        if (out) otrl_message_free(out);
        free(body);
    } else if (!strcmp(w, "send") && a1 && a2) {
        char *text = from_hex(a2), *out = NULL;
        gcry_error_t e = otrl_message_sending(us, &ops, NULL, account, PROTO, a1,
                                              OTRL_INSTAG_BEST, text, NULL, &out,
                                              OTRL_FRAGMENT_SEND_ALL, NULL, NULL, NULL);
        if (out) otrl_message_free(out);
        free(text);
        if (e) { printf("err send\n"); return 1; }
    } else if (!strcmp(w, "query") && a1) {
        char *q = otrl_proto_default_query_msg(account, policy);
        printf("inject %s ", a1); put_hex(q); printf("\n");
        free(q);
    } else if (!strcmp(w, "end") && a1) {
        otrl_message_disconnect_all_instances(us, &ops, NULL, account, PROTO, a1);
    } else if ((!strcmp(w, "smpq") && a1 && a2 && a3) || (!strcmp(w, "smps") && a1 && a2) ||
               (!strcmp(w, "smpa") && a1 && a2)) {
        ConnContext *c = ctx(a1);
        if (!c || c->msgstate != OTRL_MSGSTATE_ENCRYPTED) { printf("err not private\n"); return 1; }
        if (!strcmp(w, "smpq")) {
            char *q = from_hex(a2), *s = from_hex(a3);
            otrl_message_initiate_smp_q(us, &ops, NULL, c, q, (unsigned char *)s, strlen(s));
            free(q); free(s);
        } else {
            char *s = from_hex(a2);
            if (!strcmp(w, "smps"))
                otrl_message_initiate_smp(us, &ops, NULL, c, (unsigned char *)s, strlen(s));
            else
                otrl_message_respond_smp(us, &ops, NULL, c, (unsigned char *)s, strlen(s));
            free(s);
        }
    } else if (!strcmp(w, "trust") && a1) {
        ConnContext *c = ctx(a1);
        if (!c || !c->active_fingerprint) { printf("err no fingerprint\n"); return 1; }
        otrl_context_set_trust(c->active_fingerprint, "verified");
    } else if (!strcmp(w, "fp")) {
        char human[OTRL_PRIVKEY_FPRINT_HUMAN_LEN];
        if (!otrl_privkey_fingerprint(us, human, account, PROTO)) { printf("err no key\n"); return 1; }
        printf("fp %s\n", human);
    } else if (!strcmp(w, "peerfp") && a1) {
        ConnContext *c = ctx(a1);
        if (!c || !c->active_fingerprint) { printf("err no fingerprint\n"); return 1; }
        char human[OTRL_PRIVKEY_FPRINT_HUMAN_LEN];
        otrl_privkey_hash_to_human(human, c->active_fingerprint->fingerprint);
        printf("fp %s\n", human);
    } else if (!strcmp(w, "state") && a1) {
        ConnContext *c = ctx(a1);
        const char *s = "plaintext";
        if (c && c->msgstate == OTRL_MSGSTATE_ENCRYPTED) s = "encrypted";
        if (c && c->msgstate == OTRL_MSGSTATE_FINISHED) s = "finished";
        printf("state %s\n", s);
    } else if (!strcmp(w, "quit")) {
        return 0;
    } else {
        printf("err unknown command\n");
        return 1;
    }
    printf("ok\n");
    return 1;
}

int main(void) {
    OTRL_INIT;
    us = otrl_userstate_create();
    setvbuf(stdout, NULL, _IOLBF, 0);
    static char line[1 << 21];
    while (fgets(line, sizeof line, stdin)) {
        if (!cmd(line)) break;
        fflush(stdout);
    }
    otrl_userstate_free(us);
    return 0;
}
