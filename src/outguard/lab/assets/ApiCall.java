// outguard lab: "a Java service calling the API", the journey's JVM with a legitimate job.
//
// One HTTP GET through the JVM's own resolver and socket stack, so outguard learns (and later
// allows) the API for the java executable, beside the JNDI callback it must never allow.
//
// Usage: java -cp DIR ApiCall http://api.example.test/ [connect-timeout-ms]
// Prints one line and exits with (as JndiLookup does):
//   0  REACHED  the API answered
//   3  BLOCKED  the TCP connect failed or timed out
//   4  ERROR    anything else
import java.net.ConnectException;
import java.net.HttpURLConnection;
import java.net.NoRouteToHostException;
import java.net.SocketTimeoutException;
import java.net.URI;

public class ApiCall {
    public static void main(String[] args) {
        if (args.length < 1) {
            System.out.println("ERROR usage: ApiCall URL [connect-timeout-ms]");
            System.exit(4);
        }
        int timeout = args.length > 1 ? Integer.parseInt(args[1]) : 2000;
        try {
            HttpURLConnection c = (HttpURLConnection) new URI(args[0]).toURL().openConnection();
            c.setConnectTimeout(timeout);
            c.setReadTimeout(timeout * 2);
            int code = c.getResponseCode();
            System.out.println("REACHED HTTP " + code + " from " + args[0]);
            System.exit(0);
        } catch (ConnectException | NoRouteToHostException | SocketTimeoutException e) {
            System.out.println("BLOCKED " + e);
            System.exit(3);
        } catch (Exception e) {
            System.out.println("ERROR " + e);
            System.exit(4);
        }
    }
}
